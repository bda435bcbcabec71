"""Benchmarks: each script starts the local stand-in and prints a table plus ratios."""
