"""Automatic batch sizing: candidates, the choice, refusals, and a CPU run that uses it."""

import json

import pytest
import torch

from gpt2 import batch
from gpt2.batch import candidates, choose_batch, refuse_manual_values
from lib.config.kconfig import DefconfigError
from lib.train.settings import Settings, SettingsError

from .conftest import make_config


def test_candidates_divide_the_target_and_share_out_over_processes():
    assert candidates(128, 1) == [128, 64, 32, 16, 8, 4, 2, 1]
    assert candidates(12, 2) == [6, 3, 2, 1]  # 12 / b micro-batches must split over 2 processes
    assert candidates(7, 1) == [7, 1]


def test_the_largest_candidate_the_estimate_fits_and_the_probe_confirms_wins(monkeypatch):
    s = Settings().replace({"model.name": "gpt2", "training.batch_mode": "auto", "training.target_batch": 64})
    monkeypatch.setattr(batch, "usable_gpu_bytes", lambda device: 20 * 2**30)
    tried = []

    def probe(b, accumulation):
        tried.append((b, accumulation))
        return b <= 16  # the GPU says 32 does not fit after all

    chosen, record = choose_batch(s, torch.device("cuda"), 1, probe)
    assert (chosen.training.batch_size, chosen.training.gradient_accumulation) == (16, 4)
    assert tried == [(32, 2), (16, 4)]  # 64 was over the estimate; never probed
    assert [p["fits"] for p in record["probes"]] == [False, True]
    assert record["batch_size"] * record["gradient_accumulation"] == 64
    again, _ = choose_batch(s, torch.device("cuda"), 1, probe)
    assert again == chosen  # deterministic for the same GPU and settings


def test_nothing_fitting_is_an_error_with_the_fix(monkeypatch):
    s = Settings().replace({"model.name": "gpt2-xl", "training.batch_mode": "auto"})
    monkeypatch.setattr(batch, "usable_gpu_bytes", lambda device: 2**30)
    with pytest.raises(MemoryError, match="not even a micro-batch of 1 fits.*activation checkpointing"):
        choose_batch(s, torch.device("cuda"))


def test_values_set_by_hand_are_refused_not_replaced():
    with pytest.raises(SettingsError, match="training.batch_size given, but GPT2_BATCH_MODE is auto"):
        refuse_manual_values({"training.batch_size": 8})
    with pytest.raises(SettingsError, match="GPT2_TARGET_BATCH=3.*multiple of 2"):
        Settings().replace(
            {"training.batch_mode": "auto", "training.target_batch": 3, "runtime.nproc_per_node": 2}
        )


def test_kconfig_hides_the_manual_batch_in_auto_mode(kconf, tmp_path):
    with pytest.raises(DefconfigError, match="BATCH_SIZE"):
        make_config(tmp_path, "CONFIG_GPT2_BATCH_MODE_AUTO=y\nCONFIG_BATCH_SIZE=8\n", kconf)


def test_a_cpu_run_sizes_its_batch_and_records_it(tiny_config, tmp_path, capsys):
    from gpt2 import train

    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "2", "--eval-interval", "2"]
    assert train.main([*argv, "--batch-mode", "auto", "--target-batch", "48"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["batch_sizing"]["batch_size"] == 16 and summary["batch_sizing"]["gradient_accumulation"] == 3
    )
    assert summary["global_batch"] == 48
    settings = json.loads((out / "settings.json").read_text())["training"]
    assert (settings["batch_size"], settings["gradient_accumulation"]) == (16, 3)
    assert train.main([*argv, "--batch-mode", "auto", "--batch-size", "4"]) == 2
    assert "GPT2_BATCH_MODE is auto" in capsys.readouterr().err
