"""The test matrix: expansion, naming, and a real (tiny) matrix on CPU with a failing run."""

import json

import pytest

from lib.adamwprune import identity_of, run_identity
from lib.errors import Refusal
from lib.study.matrix import expand
from lib.train.run_dir import run_name as train_run_name
from lib.train.settings import Settings
from scripts import run_test_matrix

from .conftest import ROOT, TINY_RUN, make_config


def matrix(**kw) -> Settings:
    base = {"matrix.enabled": True, "matrix.multiple_optimizers": True, "matrix.multiple_pruning": True}
    return Settings().replace({**base, **{f"matrix.{k}": v for k, v in kw.items()}})


def test_names_follow_the_seed_project():
    def name(optimizer, method, sparsity, variant, base="adamw", seed=None, tag=""):
        return run_identity(optimizer, method, sparsity, variant, base).name(seed, tag)

    assert name("adamwprune", "state", 0.5, "bitter0") == "gpt2_adamwprune_bitter0_state_50"
    assert name("adamwprune", "state", 0.5, "bitter2", "adamwspam") == "gpt2_adamwprune-spam_bitter2_state_50"
    assert name("adamwspam", "magnitude", 0.7, "bitter1") == "gpt2_adamwspam_magnitude_70"  # no variant
    assert name("adamw", "none", 0.7, None, seed=1338, tag="x") == "gpt2_adamw_none_x_s1338"  # no sparsity


def test_a_runs_identity_keeps_adamwprunes_settings_and_the_sparsity_only_where_they_apply():
    own = run_identity("adamwprune", "state", 0.5, "bitter1", "adamwspam")
    assert (own.variant, own.base, own.sparsity, own.label) == (
        "bitter1",
        "adamwspam",
        0.5,
        "adamwprune-spam",
    )
    other = run_identity("adamwspam", "none", 0.5, "bitter1", "adamwspam")
    assert (other.variant, other.base, other.sparsity, other.label) == (None, None, None, "adamwspam")


def test_expansion_keeps_what_makes_sense_and_says_what_it_dropped():
    runs, dropped = expand(matrix(bitter1=True, movement=True, sparsity_70=True))
    names = {r.name for r in runs}
    assert names == {
        "gpt2_adamw_none", "gpt2_adamwspam_none",
        *(f"gpt2_{o}_{m}_{s}" for o in ("adamw", "adamwspam") for m in ("magnitude", "movement") for s in (50, 70)),
        *(f"gpt2_adamwprune_{v}_state_{s}" for v in ("bitter0", "bitter1") for s in (50, 70)),
    }  # fmt: skip
    text = "\n".join(dropped)
    assert "state pruning pairs only with adamwprune): adamw + state, adamwspam + state" in text
    assert "adamwprune always prunes by its own states" in text and "adamwprune + magnitude" in text
    assert "AdamWPrune variants apply to adamwprune only" in text and "adamw x bitter1" in text
    assert "a target sparsity applies only with a pruning method" in text and "adamw + none x 70%" in text


def test_two_adamwprune_bases_never_share_a_run_name(kconf, tmp_path):
    spam = Settings().replace(
        {"optimizer.name": "adamwprune", "pruning.method": "state", "adamwprune.base": "adamwspam"}
    )
    runs, _ = expand(matrix(bitter1=True).replace({"adamwprune.base": "adamwspam"}))
    assert {r.name for r in runs if r.optimizer == "adamwprune"} == {
        "gpt2_adamwprune-spam_bitter0_state_50",
        "gpt2_adamwprune-spam_bitter1_state_50",
    }
    plain = {r.name for r in expand(matrix(bitter1=True))[0] if r.optimizer == "adamwprune"}
    assert plain == {"gpt2_adamwprune_bitter0_state_50", "gpt2_adamwprune_bitter1_state_50"}
    assert identity_of(spam).label == "adamwprune-spam" and identity_of(Settings()).label == "adamwspam"
    assert train_run_name(spam) == "gpt2_adamwprune-spam_bitter0_state_50"  # a single run, named alike
    # The seeds' bitter-lesson study: four runs, every AdamWPrune variant on the SPAM base.
    config = make_config(
        tmp_path, (ROOT / "defconfigs" / "gpt2-adamwprune-finewebedu-79000-bitter-lesson").read_text(), kconf
    )
    from lib.config.load import load_settings

    s = load_settings(config)
    assert sorted(r.name for r in expand(s)[0]) == [
        "gpt2_adamwprune-spam_bitter0_state_50",
        "gpt2_adamwprune-spam_bitter1_state_50",
        "gpt2_adamwprune-spam_bitter2_state_50",
        "gpt2_adamwspam_magnitude_50",
    ]
    assert (s.pruning.pruning_warmup, s.pruning.frequency, s.pruning.ramp_end_step, s.pruning.ramp) == (
        100,
        50,
        10000,
        "linear",  # the seed project's bitter-lesson table ramped linearly (its code)
    )


def test_runs_differ_only_in_what_the_matrix_varies():
    runs, _ = expand(matrix(repeats=2))
    r = next(r for r in runs if r.name == "gpt2_adamwprune_bitter0_state_50_s1338")
    assert r.overrides() == {
        "optimizer.name": "adamwprune", "pruning.method": "state", "runtime.seed": 1338,
        "adamwprune.variant": "bitter0", "pruning.target_sparsity": 0.5,
    }  # fmt: skip
    assert {r.seed for r in runs} == {1337, 1338}


def test_single_mode_selections_become_a_one_run_matrix():
    runs, dropped = expand(Settings())
    assert [r.name for r in runs] == ["gpt2_adamwspam_none"] and dropped == []


def test_a_selection_without_its_parts_is_refused():
    with pytest.raises(ValueError, match="no AdamWPrune variant"):
        expand(matrix(bitter0=False))
    with pytest.raises(ValueError, match="no sparsity"):
        expand(matrix(sparsity_50=False))


@pytest.mark.slow
def test_a_real_matrix_resumes_isolates_failures_and_reports(tmp_path, kconf, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = make_config(
        tmp_path,
        TINY_RUN
        + f"""CONFIG_GPT2_MAX_ITERS=6
CONFIG_GPT2_EVAL_INTERVAL=3
CONFIG_OPTIMIZER_MODE_MULTIPLE=y
# CONFIG_OPTIMIZER_ENABLE_ADAMWSPAM is not set
# CONFIG_OPTIMIZER_ENABLE_ADAMWPRUNE is not set
CONFIG_PRUNING_MODE_MULTIPLE=y
# CONFIG_PRUNING_ENABLE_STATE is not set
CONFIG_DATA_DIR="{data_dir}"
""",
        kconf,
    )
    # The default PRUNING_WARMUP (1000) cannot fit 6 steps: the magnitude run fails, the dense one must not.
    assert run_test_matrix.main(["--config", str(config)]) == 1
    results = next(tmp_path.glob("test_matrix_results_*"))
    report = json.loads((results / "summary.json").read_text())
    status = {r["run"]: r for r in report["runs"]}
    assert status["gpt2_adamw_none"]["status"] == "completed"
    assert status["gpt2_adamw_none"]["final_val_ppl"] > 0
    failed = status["gpt2_adamw_magnitude_50"]
    assert failed["status"] == "failed" and failed["reason"].startswith(
        "refused: a configuration, data or checkpoint error"
    )
    assert "must lie after PRUNING_WARMUP = 1000" in failed["log_tail"]
    for name in ("summary.md", "summary.csv", "val_loss.png", "ppl_vs_sparsity.png", "time_memory.png"):
        assert (results / name).is_file(), name
    md = (results / "summary.md").read_text()
    assert "**gpt2_adamw_none** (best)" in md and "## gpt2_adamw_magnitude_50 failed" in md
    assert "![val_loss.png](val_loss.png)" in md
    assert "optimizer.name = 'adamw'" in (results / "gpt2_adamw_none" / "config.txt").read_text()

    # Again: the finished run is kept, the failed one is not retried without --rerun-failed.
    done = (results / "gpt2_adamw_none" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_test_matrix.main(["--config", str(config)]) == 1
    assert "this time: 0 finished, 0 failed, 0 interrupted; 2 kept from before" in capsys.readouterr().out
    assert (results / "gpt2_adamw_none" / "summary.json").stat().st_mtime_ns == done

    # Rerunning the failed run with the fix would need a new config; --rerun-failed retries it.
    assert run_test_matrix.main(["--config", str(config), "--rerun-failed"]) == 1
    assert "this time: 0 finished, 1 failed, 0 interrupted; 1 kept from before" in capsys.readouterr().out

    (results / "summary.md").unlink()
    assert run_test_matrix.main(["--report-only", str(results)]) == 0
    assert (results / "summary.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGINT", "SIGHUP", "SIGKILL"])
def test_a_stopped_runner_stops_its_children_and_the_matrix_resumes(tmp_path, kconf, data_dir, signum):
    """Ctrl-C, a closed terminal (SIGHUP) or SIGKILL of the runner: its training processes stop too
    (with a checkpoint), none is left writing, and the next call resumes each run exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from lib.measure.metrics import read_metrics

    config = make_config(
        tmp_path,
        TINY_RUN
        + f"""CONFIG_GPT2_MAX_ITERS=40
CONFIG_GPT2_EVAL_INTERVAL=20
CONFIG_OPTIMIZER_SELECT_ADAMW=y
CONFIG_PRUNING_MODE_MULTIPLE=y
# CONFIG_PRUNING_ENABLE_MAGNITUDE is not set
# CONFIG_PRUNING_ENABLE_STATE is not set
CONFIG_DATA_DIR="{data_dir}"
""",
        kconf,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "scripts.run_test_matrix", "--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = None
    deadline = time.time() + 120
    while metrics is None or len(metrics.read_text().splitlines()) < 4:  # a few steps logged
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
        metrics = next(tmp_path.glob("test_matrix_results_*/gpt2_adamw_none/metrics.jsonl"), None)
    run_dir = metrics.parent
    child = int((run_dir / ".lock").read_text())
    proc.send_signal(getattr(signal, signum))
    assert proc.wait(timeout=60) == (-9 if signum == "SIGKILL" else 130)
    deadline = time.time() + 60
    while os.path.exists(f"/proc/{child}") and "zombie" not in open(f"/proc/{child}/status").read():
        assert time.time() < deadline, f"the training process {child} outlived its runner"
        time.sleep(0.1)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert (run_dir / "ckpt.pt").is_file() and not (run_dir / "failure.json").exists()
    if signum != "SIGKILL":  # the runner itself had time to report
        report = json.loads((run_dir.parent / "summary.json").read_text())
        assert [r["status"] for r in report["runs"]] == ["interrupted"]

    # The next invocation (same config.py, so the same results folder) resumes it and finishes.
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "resumed at iter" in (run_dir / "output.log").read_text()
    iters = [r["iter"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert iters == sorted(set(iters)) and iters[-1] == 40  # every step logged once


def test_runs_take_gpu_groups_of_their_process_count(monkeypatch):
    from scripts.run_test_matrix import slots, visible_gpus

    assert slots(3, 1, gpus=[]) == [None, None, None]  # CPU: TEST_MATRIX_PARALLEL slots
    assert slots(1, 1, gpus=["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert slots(1, 2, gpus=["0", "1", "2", "3", "4"]) == ["0,1", "2,3"]  # the odd GPU idles
    with pytest.raises(Refusal, match="wants GPT2_NPROC_PER_NODE=4 GPUs but 2 are visible"):
        slots(1, 4, gpus=["0", "1"])
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert visible_gpus() == ["5", "7"]  # a user's selection is kept


def test_the_runner_keeps_every_gpu_group_busy_until_the_queue_is_empty(tmp_path, monkeypatch):
    """6 runs on 2 GPU groups: each GPU takes a new run as soon as its last one ends.

    A stand-in for train.py records when it ran and on which GPU, so the schedule is
    checked without GPUs: the wall time of N runs on G groups stays near ceil(N/G) runs.
    """
    import sys
    import time

    from scripts.run_test_matrix import Runner

    log = tmp_path / "schedule.txt"
    stand_in = (
        "import os, sys, time; t = time.time(); time.sleep(0.5); "
        f"open({str(log)!r}, 'a').write(f\"{{os.environ['CUDA_VISIBLE_DEVICES']}} {{t}} {{time.time()}}\\n\")"
    )
    monkeypatch.setattr(
        run_test_matrix, "train_command", lambda nproc, args: [sys.executable, "-c", stand_in]
    )
    monkeypatch.setattr(run_test_matrix, "visible_gpus", lambda: ["0", "1", "2", "3"])
    base = matrix(adamwspam=False, adamwprune=False, magnitude=False, state=False, repeats=6)
    base = base.replace({"runtime.nproc_per_node": 2, "training.gradient_accumulation": 2})
    runs, _ = expand(base)
    assert len(runs) == 6
    start = time.time()
    counts = Runner(tmp_path, base, runs, rerun_failed=False).run_all(parallel=1)
    wall = time.time() - start
    assert counts["done"] == 6
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted({gpus for gpus, _, _ in rows}) == ["0,1", "2,3"]  # two groups of two GPUs
    for group in ("0,1", "2,3"):
        spans = sorted((float(a), float(b)) for gpus, a, b in rows if gpus == group)
        assert len(spans) == 3
        gaps = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:], strict=False)]
        assert all(0 <= g < 1.0 for g in gaps), gaps  # never two runs at once; no long idle gap
    one_run = max(float(b) - float(a) for _, a, b in rows)
    assert wall < 3 * one_run + 3.0  # ceil(6 / 2) = 3 runs deep, plus process start-up


def test_a_chunk_starts_no_run_that_would_not_end_in_time(tmp_path, monkeypatch):
    """--stop-after: runs that would end past the limit stay pending; the next call finishes them."""
    import sys

    from scripts.run_test_matrix import Runner

    stand_in = (
        "import json, os, sys, time; time.sleep(0.5); out = sys.argv[sys.argv.index('--out-dir') + 1]; "
        "json.dump({'status': 'completed'}, open(os.path.join(out, 'summary.json'), 'w'))"
    )
    monkeypatch.setattr(
        run_test_matrix, "train_command", lambda nproc, args: [sys.executable, "-c", stand_in, *args]
    )
    monkeypatch.setattr(run_test_matrix, "visible_gpus", lambda: [])
    base = matrix(adamwspam=False, adamwprune=False, magnitude=False, state=False, repeats=4)
    runs, _ = expand(base)
    counts = Runner(tmp_path, base, runs, rerun_failed=False).run_all(parallel=1, stop_after=1.2)
    assert 1 <= counts["done"] <= 2 and counts["not_started"] == 4 - counts["done"], counts
    assert counts["failed"] == counts["interrupted"] == 0
    first = counts["done"]
    counts = Runner(tmp_path, base, runs, rerun_failed=False).run_all(parallel=1, stop_after=60)
    assert counts == {"done": 4 - first, "failed": 0, "interrupted": 0, "skipped": first, "not_started": 0}


def test_launch_uses_torchrun_for_several_processes(tmp_path, kconf, capsys):
    from scripts.launch import main, train_command

    assert train_command(1, ["--max-iters", "3"], python="py") == [
        "py",
        "-m",
        "gpt2.train",
        "--max-iters",
        "3",
    ]
    cmd = train_command(4, [], python="py")
    assert cmd == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "gpt2.train",
    ]
    config = make_config(
        tmp_path, "CONFIG_GPT2_NPROC_PER_NODE=2\nCONFIG_GPT2_GRADIENT_ACCUMULATION=4\n", kconf
    )
    assert main(["--print", "--config", str(config)]) == 0
    assert "--nproc_per_node=2" in capsys.readouterr().out
    assert main(["--print", "--config", str(config), "--nproc-per-node", "1"]) == 0
    assert "torch.distributed.run" not in capsys.readouterr().out


def test_a_new_score_reaches_the_matrix_the_flags_and_the_run_names_with_no_other_edit():
    """bitter3 added to the score registry alone: MatrixSettings gains its selection, the CLI its
    choice, and the matrix runs it under its own name (docs/optimizers-and-pruning.md, "Adding a score")."""
    import subprocess
    import sys

    code = """
import argparse
from lib.adamwprune import variants
variants.VARIANTS["bitter3"] = variants.Variant(lambda w, m, v: (w * m).abs(), True)
from lib.config.cli import add_override_flags, overrides_from_args
from lib.train.settings import Settings
from lib.study.matrix import expand
p = argparse.ArgumentParser()
add_override_flags(p)
flags = overrides_from_args(p.parse_args(["--adamwprune-variant", "bitter3"]))
s = Settings().replace({"matrix.enabled": True, "matrix.multiple_optimizers": True,
    "matrix.multiple_pruning": True, "matrix.bitter0": False, "matrix.bitter3": True,
    "matrix.adamw": False, "matrix.adamwspam": False})
print(flags["adamwprune.variant"], [r.name for r in expand(s)[0]])
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["bitter3", "['gpt2_adamwprune_bitter3_state_50']"]
