"""End-to-end training on real Shakespeare tokens: learning, records, resume, failures."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lib.measure.meter
import lib.train.loop
from gpt2 import train
from gpt2.model import GPT
from lib.measure.metrics import read_metrics
from lib.train.loop import Trainer
from lib.train.stop import STOP

from .conftest import ROOT, make_config


def run(config: Path, out: Path | None, *flags: str) -> int:
    return train.main(["--config", str(config), *(["--out-dir", str(out)] if out else []), *flags])


def losses(run_dir: Path) -> dict:
    return {
        (r["kind"], r["iter"]): r.get("loss", r.get("val_loss"))
        for r in read_metrics(run_dir / "metrics.jsonl")
    }


@pytest.mark.slow
def test_cpu_default_lowers_validation_loss_and_records_the_run(tmp_path, kconf, data_dir):
    text = (ROOT / "defconfigs" / "gpt2-tiny-cpu").read_text()
    config = make_config(tmp_path, text + f'CONFIG_DATA_DIR="{data_dir}"\n', kconf)
    out = tmp_path / "run"
    assert run(config, out, "--max-iters", "30", "--eval-interval", "15") == 0
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 15, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 2.0  # from ~10.8 nats
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iters"] == 30
    assert summary["final_val_ppl"] < evals[0]["val_ppl"] / 5
    assert summary["tokens"] == 30 * 8 * 128 and summary["tokens_per_sec"] > 0
    assert summary["peak_memory_bytes"] > 0 and summary["num_params"] > 7e6
    assert (
        summary["data"]["dataset"] == "shakespeare" and summary["data"]["train_sha256"]
    )  # what it trained on
    for name in (
        "config.py",
        ".config",
        "settings.json",
        "environment.json",
        "output.log",
        "ckpt.pt",
        "loss.png",
        "sample.txt",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "settings.json").read_text())["training"]["batch_size"] == 8
    assert "ms/iter" in (out / "output.log").read_text()


def test_tiny_run_learns(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_config, out) == 0
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0


def _start_in_subprocess(config: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpt2.train",
            "--config",
            str(config),
            "--out-dir",
            str(out),
            *flags,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The same thread count, and MKL's conditional numerical reproducibility: by default MKL may
        # pick a code path by buffer alignment and shrink its threads on a busy machine, and either
        # changes the last bits of a matmul (seen on 2 loaded cores, 1e-6 at step 47, then growing).
        env={
            **os.environ,
            "OMP_NUM_THREADS": str(torch.get_num_threads()),
            "MKL_CBWR": "COMPATIBLE",
            "MKL_DYNAMIC": "FALSE",
        },
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def _last_iter(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"  # read while the run appends to it: a half-written line is left out
    return max((r["iter"] for r in read_metrics(path)), default=0) if path.is_file() else 0


@pytest.mark.slow
def test_killed_twice_and_resumed_reproduces_the_uninterrupted_losses(tiny_config, tmp_path):
    config = tiny_config.read_text().replace("'GPT2_MAX_ITERS': 30", "'GPT2_MAX_ITERS': 50")
    tiny_config.write_text(config)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # Every run in a fresh process with the same environment: the comparison is of resume alone, not
    # of this test process's state after the tests before it (in full runs an in-process run drifted
    # from a fresh one by 1e-7 within 10 steps; each real run is a process of its own).
    assert _start_in_subprocess(tiny_config, straight).wait(timeout=300) == 0

    # Killed mid-interval (checkpoints every 10 steps), resumed, killed again, resumed to the end:
    # each resume goes back to its last checkpoint and retakes the steps after it.
    proc = _start_in_subprocess(tiny_config, killed)
    for kill_after in (15, 35):
        _wait_for(lambda k=kill_after: _last_iter(killed) >= k, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _last_iter(killed) < 50
        proc = _start_in_subprocess(tiny_config, killed, "--resume")
    assert proc.wait(timeout=300) == 0
    assert losses(killed) == losses(straight)  # every logged step and eval, exactly
    # output.log keeps both sessions' lines and says which steps were taken again
    taken_again = re.findall(
        r"steps (\d+)-(\d+), logged above .* are taken again", (killed / "output.log").read_text()
    )
    assert len(taken_again) == 2 and all(int(a) % 10 == 1 and int(b) >= int(a) for a, b in taken_again)


@pytest.mark.slow
def test_sigterm_checkpoints_then_resume_finishes(tiny_config, tmp_path):
    tiny_config.write_text(tiny_config.read_text().replace("'GPT2_MAX_ITERS': 30", "'GPT2_MAX_ITERS': 400"))
    out = tmp_path / "run"
    proc = _start_in_subprocess(tiny_config, out)
    _wait_for(lambda: _last_iter(out) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    summary = json.loads((out / "summary.json").read_text())
    state = torch.load(out / "ckpt.pt", weights_only=True)
    assert summary["status"] == "interrupted" and state["iter_num"] == summary["iters"] < 400
    assert run(tiny_config, out, "--resume", "--max-iters", str(summary["iters"] + 5)) == 0
    assert json.loads((out / "summary.json").read_text())["iters"] == summary["iters"] + 5


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 14:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    out = tmp_path / "run"
    assert run(tiny_config, out) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iters"] == 15
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 10
    assert "Training diverged; the last good checkpoint" in (out / "output.log").read_text()


def test_resume_refuses_changed_settings(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "10") == 0
    assert run(tiny_config, out, "--resume", "--batch-size", "8") == 2
    assert "different settings: training.batch_size" in (out / "output.log").read_text()


def test_existing_run_is_never_overwritten(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "2", "--eval-interval", "1") == 0
    before = (out / "ckpt.pt").read_bytes()
    assert run(tiny_config, out) == 2
    assert "already holds a run. Continue it with --resume" in capsys.readouterr().err
    assert (out / "ckpt.pt").read_bytes() == before


def test_corrupt_checkpoint_is_refused_clearly(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"garbage")
    assert run(tiny_config, out, "--resume") == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_missing_data_says_which_command_prepares_it(tmp_path, kconf, capsys):
    config = make_config(tmp_path, f'CONFIG_DEVICE="cpu"\nCONFIG_DATA_DIR="{tmp_path / "empty"}"\n', kconf)
    assert run(config, tmp_path / "run") == 2
    assert "python -m gpt2.prepare_data --dataset shakespeare" in capsys.readouterr().out


def test_best_checkpoint_follows_the_lowest_val_loss(tiny_config, tmp_path, monkeypatch):
    """The seed project's best-model logic never fired; ours must, and must not chase the last eval."""
    evaluate = train.Trainer.evaluate
    scripted = iter([10.0, 5.0, 3.0, 4.0])  # evals at steps 0, 10, 20, 30: best at 20

    def scripted_eval(self):
        result = evaluate(self)
        result["val_loss"] = next(scripted)
        return result

    monkeypatch.setattr(train.Trainer, "evaluate", scripted_eval)
    out = tmp_path / "run"
    assert run(tiny_config, out) == 0
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "ckpt.pt", weights_only=True)
    assert (best["iter_num"], best["val_loss"], last["iter_num"]) == (20, 3.0, 30)
    assert not torch.equal(
        best["model"]["transformer.h.0.mlp.c_fc.weight"], last["model"]["transformer.h.0.mlp.c_fc.weight"]
    )
    assert json.loads((out / "summary.json").read_text())["best_checkpoint"] == "best.pt"


def test_best_checkpoint_is_the_last_when_loss_keeps_falling(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_config, out) == 0
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "ckpt.pt", weights_only=True)
    assert best["iter_num"] == 30
    for name, tensor in last["model"].items():
        assert torch.equal(best["model"][name], tensor)


def test_a_sample_that_cannot_load_the_tokenizer_keeps_the_results(
    tiny_config, tmp_path, monkeypatch, caplog
):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")  # what tiktoken raises offline without TIKTOKEN_CACHE_DIR

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "2") == 0  # tiny_config samples 8 tokens
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert not (out / "sample.txt").exists()
    assert "TIKTOKEN_CACHE_DIR" in (out / "output.log").read_text()


def _train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("log_interval, eval_interval", [(3, 5), (4, 6), (7, 5)])
def test_a_logged_loss_is_the_mean_of_the_steps_it_covers(tiny_config, tmp_path, log_interval, eval_interval):
    every = tmp_path / "every"
    assert run(tiny_config, every, "--max-iters", "20", "--eval-interval", str(eval_interval)) == 0
    per_step = {r["iter"]: r["loss"] for r in _train_records(every)}  # GPT2_LOG_INTERVAL=1
    sparse = tmp_path / "sparse"
    flags = ("--max-iters", "20", "--eval-interval", str(eval_interval), "--log-interval", str(log_interval))
    assert run(tiny_config, sparse, *flags) == 0
    logged = _train_records(sparse)
    assert [r["iter"] for r in logged] == [*range(log_interval, 20, log_interval), 20]
    previous = 0
    for r in logged:
        covered = [per_step[i] for i in range(previous + 1, r["iter"] + 1)]
        assert r["loss"] == pytest.approx(sum(covered) / len(covered), rel=1e-6), r["iter"]
        assert 0 < r["ms_per_iter"] < 10_000
        previous = r["iter"]


def test_the_steady_state_speed_leaves_out_every_interval_that_compiled(tiny_config, tmp_path, monkeypatch):
    """A recompilation at step 7 flags its interval; one during the evaluation at 10 does not."""
    compiled = [0]
    real_step, real_eval = Trainer._step, Trainer._record_eval

    def step(self, lr):
        compiled[0] += self.state.iter_num == 6  # step 7 recompiles (a guard changed)
        return real_step(self, lr)

    def record_eval(self):
        compiled[0] += 1  # the evaluation compiles its own graphs, outside the intervals' time
        return real_eval(self)

    monkeypatch.setattr(lib.measure.meter, "compilations", lambda: compiled[0])
    monkeypatch.setattr(Trainer, "_step", step)
    monkeypatch.setattr(Trainer, "_record_eval", record_eval)
    out = tmp_path / "run"
    flags = ("--max-iters", "15", "--eval-interval", "5", "--log-interval", "3")
    assert run(tiny_config, out, *flags) == 0
    logged = _train_records(out)
    assert [(r["iter"], r["includes_compile"]) for r in logged] == [
        (3, True),  # the first interval warms up
        (6, False),
        (9, True),
        (12, False),
        (15, False),
    ]
    steady = [r["ms_per_iter"] for r in logged if not r["includes_compile"]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ms_per_iter"] == pytest.approx(sum(steady) / len(steady), rel=1e-6)
    assert "(compiling)" in (out / "output.log").read_text()


def test_a_run_stopped_inside_a_logging_interval_resumes_it_exactly(tiny_config, tmp_path, monkeypatch):
    flags = ("--max-iters", "20", "--eval-interval", "5", "--log-interval", "3")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(tiny_config, straight, *flags) == 0
    real = Trainer._should_stop

    def stop_at_10(self, budget, log_step):
        if self.state.iter_num == 10:  # as a Ctrl-C there would: between the logs at 9 and 12
            STOP.request("SIGINT")
        return real(self, budget, log_step)

    monkeypatch.setattr(Trainer, "_should_stop", stop_at_10)
    assert run(tiny_config, stopped, *flags) == 130
    assert f"resume it with `make RESUME={stopped}`" in (stopped / "output.log").read_text()
    monkeypatch.setattr(Trainer, "_should_stop", real)
    assert run(tiny_config, stopped, "--resume", *flags) == 0
    assert losses(stopped) == pytest.approx(losses(straight), rel=1e-6)  # the log at 12 covers 10-12 too


def test_a_resume_keeps_the_runs_own_settings_and_flags(tiny_config, tmp_path, monkeypatch, capsys):
    """The printed `--resume RUN_DIR` continues the run as it was started (flags included), not as
    config.py says today; a flag changes what a resume may change; `--resume` alone finds a run
    started with --out-dir (make RESUME=1)."""
    out = tmp_path / "elsewhere" / "run"  # not in tiny_config's OUTPUT_DIR
    real = Trainer._should_stop

    def stop_at_4(self, budget, log_step):
        if self.state.iter_num == 4:
            STOP.request("SIGTERM")
        return real(self, budget, log_step)

    monkeypatch.setattr(Trainer, "_should_stop", stop_at_4)
    assert run(tiny_config, out, "--max-iters", "9", "--eval-interval", "3", "--seed", "7") == 130
    monkeypatch.setattr(Trainer, "_should_stop", real)
    # config.py says 30 steps, evaluations every 10 and seed 1337; the run keeps 9, 3 and 7
    assert train.main(["--config", str(tiny_config), "--resume", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iters"] == 9
    assert sorted(i for kind, i in losses(out) if kind == "eval") == [0, 3, 6, 9]
    log = (out / "output.log").read_text()
    assert "which config.py changes: runtime.seed 7 (config.py: 1337), training.eval_interval 3" in log
    # a flag asks for a change a resume allows, and the run keeps it on the next resume
    assert run(tiny_config, out, "--resume", "--max-iters", "11") == 0
    assert json.loads((out / "settings.json").read_text())["training"]["max_iters"] == 11
    # `--resume` with no folder (make RESUME=1) finds the --out-dir run through OUTPUT_DIR's list
    assert train.main(["--config", str(tiny_config), "--resume", "--seed", "7", "--max-iters", "12"]) == 0
    assert json.loads((out / "summary.json").read_text())["iters"] == 12
    # a flag for what a resume may not change is refused, and the run's settings stay as they were
    assert run(tiny_config, out, "--resume", "--batch-size", "8") == 2
    assert json.loads((out / "settings.json").read_text())["training"]["batch_size"] == 4


def test_a_token_file_cut_short_during_a_run_is_an_error_and_the_run_resumes(
    tiny_config, tmp_path, data_dir, monkeypatch
):
    """A memory-mapped train.bin truncated under a run ended it by SIGBUS: no message, no summary."""
    tokens = tmp_path / "data" / "shakespeare"
    tokens.mkdir(parents=True)
    for name in ("train.bin", "val.bin", "meta.json"):
        (tokens / name).write_bytes((data_dir / "shakespeare" / name).read_bytes())
    whole = (tokens / "train.bin").read_bytes()
    step = Trainer._step

    def truncate_at_12(self, lr):
        if self.state.iter_num == 12:
            with open(tokens / "train.bin", "r+b") as f:
                f.truncate(200)
        return step(self, lr)

    monkeypatch.setattr(Trainer, "_step", truncate_at_12)
    out, flags = tmp_path / "run", ("--data-dir", str(tmp_path / "data"))
    assert run(tiny_config, out, *flags) == 2
    log = (out / "output.log").read_text()
    assert "train.bin holds 100 tokens, not the 304,224 it held when the run opened it" in log
    assert "Traceback" not in log and torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 10
    monkeypatch.setattr(Trainer, "_step", step)
    (tokens / "train.bin").write_bytes(whole)
    assert run(tiny_config, out, "--resume", *flags) == 0
    assert json.loads((out / "summary.json").read_text())["iters"] == 30


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_is_an_error_and_the_last_one_stays(tiny_config, tmp_path):
    """A full disk or a file size limit (here `ulimit -f`, a real process) was a RuntimeError
    traceback from torch's zip writer, the cause buried."""
    import resource

    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "10") == 0
    before = {name: (out / name).read_bytes() for name in ("ckpt.pt", "best.pt")}
    assert len(before["ckpt.pt"]) > 2**20  # the limit below stops the checkpoints, not the small records
    limit = (2**20, 2**20)
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2.train", "--config", str(tiny_config), "--resume", str(out)]
        + ["--max-iters", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, limit),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    log = (out / "output.log").read_text()
    assert f"cannot write {out / 'best.pt'}: File too large; a file size limit stops it" in log
    assert "Traceback" not in log + proc.stderr
    assert {name: (out / name).read_bytes() for name in before} == before and not list(out.glob(".*.tmp"))


def test_a_run_folder_that_cannot_be_written_is_refused_before_it_starts(
    tiny_config, tmp_path, monkeypatch, capsys
):
    import errno
    import tempfile

    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "4", "--eval-interval", "2") == 0
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system is simulated
        real = tempfile.mkstemp

        def read_only(*args, dir=None, **kwargs):
            if Path(dir) == out:
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    else:
        out.chmod(0o555)
    try:
        assert run(tiny_config, out, "--resume", "--max-iters", "6") == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert f"{out} cannot be written (" in err and "copy the run folder somewhere writable" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == kept


def test_a_stop_during_the_after_training_measurements_ends_them_and_a_resume_makes_them(
    tiny_config, tmp_path, monkeypatch
):
    from lib.measure import after_training as phase

    real, finished = phase.measure_latency, []

    def signalled(*args, **kwargs):  # SIGTERM arrives as the latency measurement begins
        os.kill(os.getpid(), signal.SIGTERM)
        out = real(*args, **kwargs)
        finished.append(out)
        return out

    monkeypatch.setattr(phase, "measure_latency", signalled)
    out = tmp_path / "run"
    latency = ("--latency", "--set", "GPT2_LATENCY_SEQ_LENS=16", "--set", "GPT2_LATENCY_BATCH_SIZES=1")
    assert run(tiny_config, out, "--max-iters", "4", "--eval-interval", "2", *latency) == 130
    assert not finished  # ended at once, not after the measurement
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["inference"] is None
    assert (
        "SIGTERM received: the after-training measurements are left for a resume"
        in (out / "output.log").read_text()
    )
    monkeypatch.setattr(phase, "measure_latency", real)
    assert run(tiny_config, out, "--resume") == 0  # the run's own settings: --latency and 4 steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iters"] == 4 and summary["inference"]


def test_resuming_a_finished_run_keeps_every_result(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "10") == 0
    kept = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "ckpt.pt")}
    summary = json.loads(kept["summary.json"])
    assert summary["final_val_ppl"] is not None and summary["peak_memory_bytes"] > 0
    assert run(tiny_config, out, "--resume", "--max-iters", "10") == 0
    assert "nothing to resume" in (out / "output.log").read_text()
    assert {name: (out / name).read_bytes() for name in kept} == kept
    # Training it longer is a resume like any other, and the summary keeps the larger peak memory.
    assert run(tiny_config, out, "--resume", "--max-iters", "14") == 0
    longer = json.loads((out / "summary.json").read_text())
    assert longer["iters"] == 14 and longer["final_val_ppl"] is not None
    assert longer["peak_memory_bytes"] >= summary["peak_memory_bytes"]


def test_resume_picks_the_latest_run_with_these_settings(tiny_config, tmp_path):
    runs = tmp_path / "runs"  # tiny_config's OUTPUT_DIR: both runs are named gpt2_adamwspam_none-*
    assert run(tiny_config, None, "--max-iters", "6") == 0
    time.sleep(1.1)  # another timestamp, a later checkpoint
    assert run(tiny_config, None, "--max-iters", "6", "--learning-rate", "1e-3") == 0
    first, second = sorted(runs.iterdir())
    assert train.main(["--config", str(tiny_config), "--resume", "--max-iters", "8"]) == 0
    assert json.loads((first / "summary.json").read_text())["iters"] == 8  # the one with its settings
    assert json.loads((second / "summary.json").read_text())["iters"] == 6


def test_the_seed_projects_time_budget_is_in_seconds(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "100000", "--max-time", "2", "--eval-interval", "100000") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "time_budget" and 2.0 <= summary["train_seconds"] < 30


def test_a_prepared_custom_corpus_trains_without_naming_its_path_again(tmp_path, kconf):
    from gpt2 import prepare_data

    corpus = tmp_path / "notes.txt"
    corpus.write_text("A small custom corpus of plain sentences, repeated. " * 400)
    data = tmp_path / "data"
    assert (
        prepare_data.main(
            [
                "--config",
                str(tmp_path / "none"),
                "--dataset",
                "custom",
                "--path",
                str(corpus),
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    config = make_config(
        tmp_path,
        f'CONFIG_GPT2_DATASET_CUSTOM=y\nCONFIG_DATA_DIR="{data}"\nCONFIG_DEVICE="cpu"\n# CONFIG_GPT2_COMPILE is not set\n'
        "CONFIG_GPT2_BLOCK_SIZE=32\nCONFIG_BATCH_SIZE=4\nCONFIG_GPT2_EVAL_SAMPLES=2\nCONFIG_GPT2_GENERATION_MAX_TOKENS=0\n",
        kconf,
    )
    out = tmp_path / "run"
    assert run(config, out, "--max-iters", "4", "--eval-interval", "4") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["source"] == str(corpus.resolve()) and summary["dataset"] == "custom"
    # Naming another corpus than the one prepared is refused, not silently trained on.
    other = tmp_path / "other.txt"
    other.write_text("Another corpus. " * 50)
    assert run(config, tmp_path / "other", "--max-iters", "4", "--custom-path", str(other)) == 2
    assert "they were made from" in (tmp_path / "other" / "output.log").read_text()


def test_out_of_memory_is_a_refusal_with_the_memory_advice_and_keeps_the_results(
    tiny_config, tmp_path, monkeypatch
):
    real = Trainer._step

    def oom_at_5(self, lr):
        if self.state.iter_num == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, lr)

    monkeypatch.setattr(Trainer, "_step", oom_at_5)
    out = tmp_path / "run"
    assert run(tiny_config, out, "--eval-interval", "3") == 2
    log = (out / "output.log").read_text()
    assert "error: out of memory on cpu while training, at iter 5 (CUDA out of memory." in log
    assert "Lower BATCH_SIZE (--batch-size)" in log and "Traceback" not in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "out_of_memory" and summary["iters"] == 5
    # the evaluation at 3 is kept (best_val_loss, metrics.jsonl), but is not the final weights'
    assert summary["best_val_loss"] is not None and summary["final_val_loss"] is None
    assert any(r["kind"] == "eval" and r["iter"] == 3 for r in read_metrics(out / "metrics.jsonl"))
    assert max(r["iter"] for r in read_metrics(out / "metrics.jsonl")) == 5


def test_out_of_memory_while_setting_up_is_refused_with_the_advice(tiny_config, tmp_path, monkeypatch):
    def no_room(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(GPT, "to", no_room)
    out = tmp_path / "run"
    assert run(tiny_config, out) == 2
    assert "out of memory on cpu while setting the run up" in (out / "output.log").read_text()


def test_a_bug_is_not_passed_off_as_a_configuration_error(tiny_config, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(train, "build_optimizer", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):  # a traceback, not "error: ..." and exit 2
        run(tiny_config, tmp_path / "run")


def test_a_resume_may_change_how_a_run_is_tracked_or_grouped(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "4", "--eval-interval", "2") == 0
    # A matrix passes its results folder as the tracker group: resuming from another folder name is fine.
    assert run(tiny_config, out, "--resume", "--max-iters", "6", "--tracker-group", "elsewhere") == 0
    assert json.loads((out / "summary.json").read_text())["iters"] == 6


def test_the_summary_is_a_run_summary_and_old_ones_still_read(tiny_config, tmp_path):
    """summary.json holds exactly RunSummary's fields (the schema train, report and results share);
    every summary kept in docs/results, written by older versions, reads back."""
    import dataclasses

    from lib.measure.summary import RunSummary

    out = tmp_path / "run"
    assert run(tiny_config, out, "--max-iters", "4") == 0
    written = json.loads((out / "summary.json").read_text())
    assert set(written) == {f.name for f in dataclasses.fields(RunSummary)}
    summary = RunSummary.read(out / "summary.json")
    assert summary.finished and summary.iters == 4 and summary.to_dict() == written
    kept = sorted((ROOT / "docs" / "results").glob("*/gpt2_*/summary.json"))
    assert len(kept) > 50
    for path in kept:
        assert RunSummary.read(path).final_val_ppl is not None, path


def test_one_run_folder_has_one_writer(tiny_config, tmp_path, capsys):
    """A second run, or a second resume, into a folder another process is writing is refused
    before it touches anything; the lock goes with the process, so a later resume is taken."""
    out = tmp_path / "run"
    proc = _start_in_subprocess(tiny_config, out, "--max-iters", "400", "--eval-interval", "400")
    try:
        _wait_for(lambda: _last_iter(out) >= 2, proc)
        before = (out / "metrics.jsonl").read_bytes()
        for flags in ([], ["--resume"], ["--seed", "2", "--optimizer", "adamw"]):
            assert run(tiny_config, out, *flags) == 2
            err = capsys.readouterr().err
            assert f"is being written by another process (pid {proc.pid})" in err, err
        assert (out / "metrics.jsonl").read_bytes()[: len(before)] == before  # nothing of theirs in it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    assert run(tiny_config, out, "--resume", "--max-iters", "12") == 0


KILL_AFTER_WRITE = """
import os, signal, sys
import lib.train.loop as loop
from gpt2 import train

written, target, kill_at = [], sys.argv[1], int(sys.argv[2])
save = loop.save_checkpoint

def save_then_die(path, state):
    save(path, state)
    if path.name == target and state.get("iter_num") == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # dies inside the window, as a power cut would

loop.save_checkpoint = save_then_die
sys.exit(train.main(sys.argv[3:]))
"""


def test_a_death_between_the_two_checkpoint_writes_leaves_best_pt_true(tiny_config, tmp_path):
    """SIGKILL right after ckpt.pt is written at the last evaluation, as a real process: the run
    resumes, and summary.json's best validation loss is the one best.pt holds, at its iteration."""
    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "20", "--eval-interval", "10"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_WRITE, "ckpt.pt", "20", *argv], cwd=ROOT, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL
    assert run(tiny_config, out, "--resume", "--max-iters", "20", "--eval-interval", "10") == 0
    summary = json.loads((out / "summary.json").read_text())
    best = torch.load(out / "best.pt", weights_only=True)
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval" and r["iter"] > 0]
    lowest = min(evals, key=lambda r: r["val_loss"])
    assert summary["best_val_loss"] == best["val_loss"] == lowest["val_loss"]
    assert best["iter_num"] == lowest["iter"]


DIE_IN_METRICS_REWRITE = """
import os, signal, sys
from pathlib import Path
from gpt2 import train

write_text, replace = Path.write_text, os.replace

def die(what):
    os.kill(os.getpid(), signal.SIGKILL)

def write_text_then_die(self, *args, **kwargs):
    if self.name == "metrics.jsonl":  # an in-place rewrite: truncated, then the kill
        open(self, "w").close()
        die(self)
    return write_text(self, *args, **kwargs)

def replace_then_die(src, dst, *args, **kwargs):
    if Path(dst).name == "metrics.jsonl":  # an atomic rewrite: the new file written, not yet in place
        die(dst)
    return replace(src, dst, *args, **kwargs)

Path.write_text, os.replace = write_text_then_die, replace_then_die
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_death_during_the_metrics_rewrite_loses_no_record_and_temp_files_are_swept(tiny_config, tmp_path):
    out = tmp_path / "run"
    flags = ("--max-iters", "30", "--eval-interval", "10")
    proc = _start_in_subprocess(tiny_config, out, *flags)
    try:
        _wait_for(lambda: _last_iter(out) >= 15, proc)  # past the checkpoint at 10
    finally:
        proc.kill()
        proc.wait()
    before = (out / "metrics.jsonl").read_text()
    (out / ".ckpt.pt.deadbeef.tmp").write_bytes(b"x" * 1000)  # a save a kill cut short
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--resume", *flags]
    died = subprocess.run(
        [sys.executable, "-c", DIE_IN_METRICS_REWRITE, *argv], cwd=ROOT, capture_output=True
    )
    assert died.returncode == -signal.SIGKILL
    after = (out / "metrics.jsonl").read_text()
    assert after == before  # the rewrite never landed: every record is still there
    assert not list(out.glob(".ckpt.pt.*.tmp"))  # swept when the resume took the folder
    assert run(tiny_config, out, "--resume", *flags) == 0
    iters = [r["iter"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert iters == list(range(1, 31))


def test_a_symbolic_link_in_a_run_folder_is_refused_and_its_target_untouched(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (out / "output.log").symlink_to(target)
    assert run(tiny_config, out, "--max-iters", "2") == 2
    assert "holds symbolic links (output.log)" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"


def test_a_finished_run_can_keep_its_checkpoint_without_the_optimizer(tiny_config, tmp_path, monkeypatch):
    saved = []  # (iter, whether ckpt.pt kept the optimizer's state) for each ckpt.pt write
    real_save = lib.train.loop.save_checkpoint

    def spy(path, state):
        if path.name == "ckpt.pt":
            saved.append((state["iter_num"], state["optimizer"] is not None))
        real_save(path, state)

    monkeypatch.setattr(lib.train.loop, "save_checkpoint", spy)
    out, kept = tmp_path / "lean", tmp_path / "kept"
    flags = ("--max-iters", "10", "--eval-interval", "5")
    assert run(tiny_config, out, *flags, "--set", "GPT2_CHECKPOINT_FINAL_OPTIMIZER=n") == 0
    assert saved == [(5, True), (10, False)]  # only the finished run's checkpoint leaves it out
    assert run(tiny_config, kept, *flags) == 0
    assert (out / "ckpt.pt").stat().st_size < 0.6 * (kept / "ckpt.pt").stat().st_size
    lean = torch.load(out / "ckpt.pt", weights_only=True)
    full = torch.load(kept / "ckpt.pt", weights_only=True)
    assert all(torch.equal(lean["model"][k], full["model"][k]) for k in full["model"])
    # Resuming it finds nothing to do; training it further is refused, saying why, and changes nothing.
    before = (out / "ckpt.pt").read_bytes()
    assert run(tiny_config, out, "--resume", *flags, "--set", "GPT2_CHECKPOINT_FINAL_OPTIMIZER=n") == 0
    assert "cannot be trained further" in (out / "output.log").read_text()
    assert (
        run(tiny_config, out, "--resume", "--max-iters", "14", "--set", "GPT2_CHECKPOINT_FINAL_OPTIMIZER=n")
        == 2
    )
    log_text = (out / "output.log").read_text()
    assert (
        "finished at iter 10 with GPT2_CHECKPOINT_FINAL_OPTIMIZER=n" in log_text
        and "Traceback" not in log_text
    )
    assert (out / "ckpt.pt").read_bytes() == before


def test_sigterm_during_an_evaluation_abandons_it_and_stops_within_seconds(tiny_config, tmp_path):
    out = tmp_path / "run"
    flags = ("--max-iters", "4", "--eval-interval", "2", "--eval-samples", "3000")  # seconds per evaluation
    proc = _start_in_subprocess(tiny_config, out, *flags)
    log_file = out / "output.log"
    _wait_for(
        lambda: log_file.is_file() and "tokens/step" in log_file.read_text(), proc
    )  # the baseline eval starts
    time.sleep(0.5)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    took = time.monotonic() - signalled
    text = log_file.read_text()
    assert "evaluation at iter 0 abandoned (SIGTERM)" in text and "Traceback" not in text
    assert took < 10, f"{took:.1f} s from SIGTERM to exit"  # a whole evaluation takes longer
    assert not (out / "metrics.jsonl").exists()  # no record of the half-made evaluation
    state = torch.load(out / "ckpt.pt", weights_only=True)
    assert state["iter_num"] == 0 and state["eval_pending"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["final_val_loss"] is None


def test_a_warmup_longer_than_the_run_is_warned_about(tiny_config, tmp_path, caplog):
    assert run(tiny_config, tmp_path / "run", "--max-iters", "2", "--lr-warmup-steps", "100000") == 0
    assert "GPT2_WARMUP_STEPS (100000) is not below the run's 2 steps" in caplog.text
    caplog.clear()
    assert run(tiny_config, tmp_path / "ok", "--max-iters", "6", "--warmup-steps", "2") == 0
    assert "GPT2_WARMUP_STEPS" not in caplog.text
