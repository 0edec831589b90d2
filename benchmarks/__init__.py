"""Performance figures, printed as ratios measured within one run (``python -m benchmarks``)."""
