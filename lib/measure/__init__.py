"""Measurement and records: metrics, run summaries, the GPU monitor, latency, downstream evaluation, trackers."""
