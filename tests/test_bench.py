"""The benchmark scripts run end to end at tiny size on the CPU (speed is judged on GPUs, not here)."""

import json

from scripts import bench_memory, bench_train


def test_bench_train_measures_the_baseline_and_this_project(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--model", "gpt2-tiny", "--block-size", "32", "--batch-size", "2"]
    argv += ["--warmup", "1", "--windows", "2", "--steps", "2", "--json", str(out)]
    argv += ["--only", "baseline,hf,adamw,adamw-fused-loss,adamw-movement"]
    assert bench_train.main(argv) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"baseline", "hf", "adamw", "adamw-fused-loss", "adamw-movement"}
    for name in ("baseline", "adamw", "adamw-fused-loss", "adamw-movement"):
        assert rows[name]["tokens_per_sec"] > 0 and len(rows[name]["window_ms"]) == 2
    assert "vs baseline" in capsys.readouterr().out


def test_bench_memory_compares_the_estimate_with_a_measurement(tmp_path):
    out = tmp_path / "mem.json"
    assert bench_memory.main(["--device", "cpu", "--probe", "gpt2-tiny:2:32", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "gpt2-tiny" and row["batch_size"] == 2 and row["estimate_bytes"] > 0
    assert row["measured_bytes"] is None  # only CUDA reports allocated peaks


def test_a_window_that_compiled_is_not_timed(tmp_path, monkeypatch):
    """A recompilation in the first timed window (SPAM's clipping starting after its grace steps)
    would make that window ~50x slower; it is replaced by another window and counted."""
    import argparse
    import time

    import torch

    count, steps = [0], [0]

    def step():
        steps[0] += 1
        if steps[0] == 3:  # the first timed step compiles
            count[0] += 1
            time.sleep(0.2)

    monkeypatch.setattr(bench_train, "compilations", lambda: count[0])
    args = argparse.Namespace(warmup=1, windows=2, steps=2)
    result = bench_train.measure(step, args, torch.device("cpu"), tmp_path)
    assert result["compiled_windows"] == 1 and len(result["window_ms"]) == 2
    assert result["ms_per_iter"] < 50  # the 100 ms/iter of the compiling window is not in it
