"""Herald benchmarks: `python -m loadtest --help` (and the older single-purpose scripts here)."""
