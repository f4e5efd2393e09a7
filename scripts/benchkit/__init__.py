"""The pieces of `make bench` (scripts/bench.py): history loading, measuring, reporting."""
