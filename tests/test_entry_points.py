"""The seed project's own commands: its entry points started as files, from the root and from gpt2/."""

import json
import os
import subprocess
import sys

from .conftest import ROOT, TINY_RUN, make_config


def _run(argv: list[str], cwd, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell has it
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env={**environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_prepare_data_started_as_a_file_from_the_root_prepares_the_tokens(tmp_path, shakespeare_source):
    argv = ["gpt2/prepare_data.py", "--dataset", "shakespeare", "--data-dir", str(tmp_path)]
    if shakespeare_source:
        argv += ["--source", shakespeare_source]
    done = _run(argv, ROOT)
    assert done.returncode == 0, done.stderr
    assert "ModuleNotFoundError" not in done.stderr
    assert "started as a file: running `python -m gpt2.prepare_data`" in done.stderr
    assert json.loads((tmp_path / "shakespeare" / "meta.json").read_text())["train_tokens"] > 300_000


def test_train_started_as_a_file_inside_gpt2_trains_with_the_seeds_flags(tmp_path, kconf, data_dir):
    config = make_config(tmp_path, TINY_RUN + f'CONFIG_DATA_DIR="{data_dir}"\n', kconf)
    out = tmp_path / "run"
    seed_flags = ["--batch-size", "4", "--gradient-accumulation", "2", "--num-epochs", "1"]
    seed_flags += ["--optimizer", "adamw", "--pruning-method", "none", "--device", "cpu"]
    done = _run(
        ["train.py", *seed_flags, "--max-iters", "3", "--config", str(config), "--out-dir", str(out)],
        ROOT / "gpt2",
    )
    assert done.returncode == 0, done.stderr
    assert f"running `python -m gpt2.train` in {ROOT}" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["optimizer"] == "adamw"


def test_the_suite_without_its_data_stops_once_and_names_what_to_set(tmp_path):
    """Offline with no Shakespeare copy, every data test would error; the session stops once instead."""
    missing = tmp_path / "no-such-input.txt"
    done = _run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_entry_points.py::test_train_started_as_a_file_inside_gpt2_trains_with_the_seeds_flags",
            "tests/test_train.py::test_tiny_run_learns",
        ],
        ROOT,
        SHAKESPEARE_SOURCE=str(missing),
        PYTHONPATH=str(ROOT),
    )
    out = done.stdout + done.stderr
    assert done.returncode == 4, out
    assert out.count("SHAKESPEARE_SOURCE=/path/to/tinyshakespeare/input.txt") == 1, out
    assert f"--source {missing}: no such file" in out
    assert "_finalizers" not in out and "Traceback" not in out
