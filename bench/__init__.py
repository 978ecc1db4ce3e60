"""Benchmarks, load and chaos scenarios: each prints its figures and writes them to docs/."""
