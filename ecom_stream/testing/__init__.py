"""Test helpers for projects using ecom-stream: the pytest plugin lives in ``plugin.py``."""
