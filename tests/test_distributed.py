"""One run over two CPU processes (torchrun, gloo, DDP) against the same run in one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.runtime.distributed import Dist, check_replicas
from lib.train.checkpoint import load_checkpoint
from tests.conftest import ROOT, TINY_RUN, make_config


def torchrun(config: Path, out: Path, nproc: int, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "gpt2.train", "--config", str(config), "--out-dir", str(out), *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def records(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


@pytest.fixture
def ddp_config(tmp_path, kconf, data_dir) -> Path:
    """Magnitude pruning to 60% over 16 steps of 4 micro-batches (shared out over the ranks)."""
    return make_config(
        tmp_path,
        TINY_RUN
        + f"""CONFIG_GPT2_GRADIENT_ACCUMULATION=4
CONFIG_GPT2_MAX_ITERS=16
CONFIG_GPT2_EVAL_INTERVAL=8
CONFIG_GPT2_LOG_INTERVAL=4
CONFIG_GPT2_WARMUP_STEPS=2
CONFIG_LEARNING_RATE="2e-3"
CONFIG_PRUNING_MODE_SINGLE=y
CONFIG_PRUNING_SELECT_MAGNITUDE=y
CONFIG_TARGET_SPARSITY="0.6"
CONFIG_PRUNING_WARMUP=4
CONFIG_PRUNING_FREQUENCY=4
CONFIG_PRUNING_RAMP_END=12
CONFIG_DATA_DIR="{data_dir}"
""",
        kconf,
    )


def test_two_ranks_match_one_process_and_keep_identical_masks(ddp_config, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = torchrun(ddp_config, one, 1)
    assert single.returncode == 0, single.stdout + single.stderr
    double = torchrun(ddp_config, two, 2)
    assert double.returncode == 0, double.stdout + double.stderr

    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 4 * 4
    assert summary["tokens"] == 16 * 4 * 4 * 32
    # Every eval compared the ranks' weights and masks (check_replicas raises on a difference).
    assert (
        abs(summary["model_sparsity"] - json.loads((one / "summary.json").read_text())["model_sparsity"])
        < 1e-9
    )
    # The same tokens each step: the two runs differ only in the order of float sums.
    for a, b in zip(records(one, "train"), records(two, "train"), strict=True):
        assert a["iter"] == b["iter"]
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3), (a, b)
    for a, b in zip(records(one, "eval"), records(two, "eval"), strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=2e-3)
        assert a["sparsity"] == b["sparsity"]
    assert records(two, "eval")[-1]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    # Only rank 0 writes; the checkpoint carries one generator state per rank.
    state = load_checkpoint(two / "ckpt.pt")
    assert len(state["rng"]) == 2
    assert [r["iter"] for r in records(two, "train")] == [4, 8, 12, 16]  # one writer, no duplicates


def test_movement_pruning_on_two_ranks_resumes_with_masks_that_agree(ddp_config, tmp_path):
    """Movement scores accumulate from all-reduced gradients, so the ranks prune the same weights;
    stopped at step 12 (the ramp's end: a run's ramp must end within it) and resumed, it goes on from
    every rank's saved state with the masks kept (mid-ramp resume: tests/test_pruning.py)."""
    out, movement = tmp_path / "r", ("--pruning-method", "movement")
    first = torchrun(ddp_config, out, 2, *movement, "--max-iters", "12")
    assert first.returncode == 0, first.stderr
    again = torchrun(ddp_config, out, 2, *movement, "--resume", "--max-iters", "16")
    assert again.returncode == 0, again.stderr
    for done in (first, again):  # every eval compared the ranks' weights and masks
        assert "differs from rank 0" not in done.stderr
    assert records(out, "train")[-1]["iter"] == 16
    assert load_checkpoint(out / "ckpt.pt")["iter_num"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruning_method"] == "movement" and summary["world_size"] == 2
    assert [r["sparsity"] for r in records(out, "eval")][-1] == pytest.approx(0.6, abs=1e-3)


def test_accumulation_must_divide_over_the_ranks(ddp_config, tmp_path):
    done = torchrun(ddp_config, tmp_path / "x", 3)
    assert done.returncode != 0
    assert "GPT2_GRADIENT_ACCUMULATION=4 does not divide over 3 processes" in done.stderr
    assert "--gradient-accumulation 3" in done.stderr


REPLICA_SCRIPT = """
import sys
import torch
sys.path.insert(0, sys.argv[1])
from lib.runtime.distributed import Dist, ReplicasDiverged, check_replicas, start, stop
dist = Dist.from_env()
start(dist, "cpu")
w = torch.ones(4, 4)
check_replicas(dist, [w])
if dist.rank == 1:
    w[0, 0] = 0.0
try:
    check_replicas(dist, [w])
except ReplicasDiverged as e:
    with open(f"{sys.argv[2]}/rank{dist.rank}.txt", "w") as f:  # one file per rank: no interleaving
        f.write(f"caught: {e}")
stop(dist)
"""


def test_replica_check_catches_a_difference(tmp_path):
    """check_replicas compares fingerprints; a weight changed on one rank is reported on all."""
    script = tmp_path / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        cmd + [str(script), str(ROOT), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert text.startswith("caught: rank 1 differs from rank 0 in 1 tensor(s)")
    check_replicas(Dist(), [torch.ones(2)])  # a single process has nothing to compare
