"""Benchmarks (run on demand with `make bench`): figures and ratios, never pass/fail tests."""
