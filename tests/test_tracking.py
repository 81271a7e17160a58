"""Experiment trackers receive the run's metrics (offline: no account, no network)."""

import json
import sqlite3

import pytest

from gpt2 import train
from lib.errors import Refusal
from lib.measure.tracking import TrackingSettings, start_tracker

from .conftest import TINY_RUN, make_config


def tracked_config(tmp_path, kconf, data_dir, choice: str):
    return make_config(
        tmp_path,
        TINY_RUN
        + f"""CONFIG_GPT2_MAX_ITERS=6
CONFIG_GPT2_EVAL_INTERVAL=3
CONFIG_GPT2_LOG_INTERVAL=2
CONFIG_DATA_DIR="{data_dir}"
CONFIG_{choice}=y
CONFIG_TRACKER_PROJECT="test-project"
""",
        kconf,
    )


def test_trackio_gets_every_eval(tmp_path, kconf, data_dir, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read once, when trackio is imported
    pytest.importorskip("trackio")
    config = tracked_config(tmp_path, kconf, data_dir, "ENABLE_TRACKIO")
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out-dir", str(out), "--tracker-group", "g1"]) == 0
    db = sqlite3.connect(tmp_path / "trackio" / "test-project.db")
    rows = db.execute("select step, metrics from metrics where run_name = 'run' order by step").fetchall()
    evals = {step: json.loads(m)["eval/val_loss"] for step, m in rows if b"eval/val_loss" in m}
    local = {
        r["iter"]: r["val_loss"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "eval"
    }
    assert evals == pytest.approx(local) and sorted(evals) == [0, 3, 6]


def test_wandb_offline_writes_the_run_locally(tmp_path, kconf, data_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tracked_config(tmp_path, kconf, data_dir, "ENABLE_WANDB")
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out-dir", str(out)]) == 0
    (record,) = out.glob("wandb/offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"eval/val_loss" in data and b"train/tokens_per_sec" in data


def test_missing_tracker_package_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trackio(name, *args, **kwargs):
        if name == "trackio":
            raise ImportError("no trackio", name="trackio")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trackio)
    with pytest.raises(Refusal, match=r"needs the trackio package: pip install -e '.\[tracking\]'"):
        start_tracker(TrackingSettings(tracker="trackio"), tmp_path, "r", {})


def test_no_tracker_is_nothing():
    assert start_tracker(TrackingSettings(), None, "r", {}) is None
