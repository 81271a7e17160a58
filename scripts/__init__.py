"""Thin commands over gpt2/ and lib/: Kconfig generation, launching, the test matrix, results tables, benchmarks, exports, migration."""
