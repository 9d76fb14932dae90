"""Evaluation: `loc3r eval` (evaluation.py), the benchmarks' official metrics (metrics.py), the blind baselines
(baselines.py), reports' plots (plots.py)."""
