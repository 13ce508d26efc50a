"""Data-quality verdicts: the Great Expectations engine."""
