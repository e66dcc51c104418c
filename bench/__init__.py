"""The gateway benchmark: `make bench` (figures) and `make bench-smoke` (correctness); see bench/run.py."""
