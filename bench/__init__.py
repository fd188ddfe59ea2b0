"""Benchmarks, run as modules (`python -m bench.lock_bench`); they print JSON, not tests."""
