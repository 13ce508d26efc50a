"""Kept apart from the runtime: the simulated source, the demo and the benchmark."""
