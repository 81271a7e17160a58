"""Measurements beside and after training: the GPU monitor and the inference latency."""

import json
import time

import pytest
import torch

from gpt2.model import GPT, GPTConfig
from lib.measure.gpu_monitor import GPUMonitor, _nvml_index, plot_gpu, summarize
from lib.measure.inference import measure_latency, percentile
from lib.measure.settings import InferenceSettings, MonitorSettings
from lib.train.settings import SettingsError


def test_monitor_samples_in_the_background_and_stops_at_once(tmp_path):
    count = iter(range(10_000))
    sampler = lambda: {
        "gpu_util_percent": 50.0,
        "power_watts": 100.0 + next(count),
        "memory_used_bytes": 2**30,
    }
    monitor = GPUMonitor(tmp_path / "gpu.jsonl", sampler, interval=0.01, source="fake").start()
    time.sleep(0.2)
    start = time.perf_counter()
    summary = monitor.stop()
    assert time.perf_counter() - start < 1.0  # stop does not wait out an interval
    lines = [json.loads(x) for x in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert len(lines) >= 5 and summary["samples"] == len(lines)
    assert summary["mean_gpu_util_percent"] == 50.0 and summary["max_memory_used_bytes"] == 2**30
    assert summary["source"] == "fake" and summary["energy_wh"] > 0
    assert plot_gpu(tmp_path / "gpu.jsonl", tmp_path / "gpu.png", "t")
    assert (tmp_path / "gpu.png").stat().st_size > 0


def test_energy_is_the_integral_of_the_power_samples():
    samples = [{"seconds": 0.0, "power_watts": 100.0}, {"seconds": 1800.0, "power_watts": 300.0}]
    assert summarize(samples)["energy_wh"] == pytest.approx(100.0)  # (100 + 300) / 2 W for half an hour


def test_a_failing_sampler_stops_the_monitor_not_the_run(tmp_path):
    def broken():
        raise RuntimeError("driver gone")

    monitor = GPUMonitor(tmp_path / "gpu.jsonl", broken, interval=0.01).start()
    time.sleep(0.05)
    assert monitor.stop() is None


def test_cpu_runs_sample_nothing_and_bad_intervals_are_refused(tmp_path, monkeypatch):
    monitor = GPUMonitor.for_device(tmp_path / "gpu.jsonl", torch.device("cpu"), MonitorSettings())
    assert monitor.start().stop() is None and not (tmp_path / "gpu.jsonl").exists()
    with pytest.raises(SettingsError, match="CONFIG_GPT2_GPU_MONITOR_INTERVAL"):
        MonitorSettings(interval_seconds=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert _nvml_index(torch.device("cuda:1")) == 5  # NVML counts GPUs as the driver does


def test_latency_shapes_are_capped_at_the_context_and_validated():
    s = InferenceSettings(seq_lens="512, 1024", batch_sizes="1,8")
    assert s.shapes(1024) == [(1, 512), (1, 1024), (8, 512), (8, 1024)]
    assert s.shapes(128) == [(1, 128), (8, 128)]
    with pytest.raises(SettingsError, match="CONFIG_GPT2_LATENCY_SEQ_LENS"):
        InferenceSettings(seq_lens="512,big")
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)


def test_latency_is_measured_for_prefill_and_one_generation_step():
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32))
    rows = measure_latency(model, torch.device("cpu"), None, [(1, 16), (2, 32)], repeats=3)
    assert [(r["mode"], r["batch_size"], r["seq_len"]) for r in rows] == [
        ("prefill", 1, 16), ("decode", 1, 16), ("prefill", 2, 32), ("decode", 2, 32),
    ]  # fmt: skip
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p95_ms"]
    prefill, decode = rows[2], rows[3]
    assert prefill["tokens_per_sec"] == pytest.approx(1000 * 64 / prefill["p50_ms"])
    assert decode["tokens_per_sec"] == pytest.approx(1000 * 2 / decode["p50_ms"])
    # a real generation step: against a cache of the tokens before it, whose size is measured
    assert decode["cache_bytes_per_token"] == 4 * model.config.kv_cache_values_per_token()  # fp32
    assert "cache_bytes_per_token" not in prefill
    assert model.training  # put back as it was


def test_a_run_with_latency_records_it_in_its_summary(tiny_config, tmp_path):
    from gpt2 import train
    from lib.study.report import decode_latency

    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "2", "--eval-interval", "2"]
    argv += ["--latency", "--set", "GPT2_LATENCY_SEQ_LENS=8,64", "--set", "GPT2_LATENCY_REPEATS=3"]
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["batch_size"], r["seq_len"]) for r in summary["inference"]} == {
        (1, 8),
        (1, 32),
        (8, 8),
        (8, 32),
    }
    assert decode_latency(summary["inference"]) > 0 and summary["gpu"] is None  # a CPU run
    assert "inference latency" in (out / "output.log").read_text()


def test_the_meter_times_intervals_without_evaluations_and_resumes_its_own_state(monkeypatch):
    """Log intervals exclude the paused evaluation's time and compilations, the first interval and
    any that compiled never measure the speed, and a stop counts the unlogged steps as training."""
    import lib.measure.meter as meter_module
    from lib.measure.meter import IntervalMeter

    clock, compiled = [0.0], [0]
    monkeypatch.setattr(meter_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(meter_module, "compilations", lambda: compiled[0])
    meter = IntervalMeter(torch.device("cpu"))
    meter.start()

    def steps(n, seconds):
        for _ in range(n):
            meter.step()
            clock[0] += seconds

    steps(3, 1.0)
    assert meter.close() == (3.0, 3, True)  # the first interval warms up
    steps(2, 1.0)
    meter.pause()
    clock[0] += 50.0  # an evaluation: neither its time nor its compilations are the interval's
    compiled[0] += 4
    meter.resume()
    steps(1, 1.0)
    assert meter.close() == (3.0, 3, False)
    steps(3, 2.0)
    compiled[0] += 1  # a recompilation inside the interval
    assert meter.close() == (6.0, 3, True)
    assert meter.throughput() == (3.0, 3) and meter.train_seconds == 12.0
    steps(2, 1.0)
    meter.pause(stopping=True)  # a stop: the two unlogged steps still count
    assert meter.train_seconds == 14.0

    again = IntervalMeter(torch.device("cpu"))
    again.load_state_dict(meter.state_dict())  # the checkpoint's flat keys
    assert again.state_dict() == meter.state_dict()
    again.start()
    steps_before = again.interval_steps
    assert steps_before == 2 and again.interval_seconds == 2.0  # the stopped interval goes on
    again.load_state_dict({})  # a checkpoint from before any interval: zeros, not an error
    assert again.throughput() == (0, 0)
