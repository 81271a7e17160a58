"""Hyperparameter sweeps: the file format, the expansion into matrix runs, and a real tiny sweep."""

import json

import pytest

from lib.config.sweep import load_sweep, parse_sweep
from lib.study.matrix import expand
from lib.study.sweep import label
from lib.train.settings import Settings, SettingsError
from scripts import run_test_matrix

from .conftest import ROOT, TINY_RUN, make_config


def test_lists_and_ranges_become_typed_values_in_file_order():
    sweep = parse_sweep(
        """
        metric = "final_val_loss"
        [values]
        LEARNING_RATE = { start = 1e-4, stop = 1e-2, num = 3, log = true }
        training.warmup_steps = { start = 0, stop = 200, num = 3 }  # an older version's path
        CONFIG_SPAM_THETA = [25, 50]
        GPT2_COMPILE = [true, false]
        """
    )
    assert list(sweep.values) == [
        "training.learning_rate",
        "training.lr_warmup_steps",
        "optimizer.spam_theta",
        "runtime.compile",
    ]
    assert sweep.values["training.learning_rate"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert sweep.values["training.lr_warmup_steps"] == [0, 100, 200]
    assert sweep.values["optimizer.spam_theta"] == [25.0, 50.0]  # ints become the field's float
    assert sweep.metric == "final_val_loss" and len(sweep.combinations()) == 3 * 3 * 2 * 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("[values]\nLEARNING_RAT = [1e-3]", "did you mean LEARNING_RATE"),
        ("[values]\nLEARNING_RATE = []", "non-empty list"),
        ("[values]\nLEARNING_RATE = { start = 1, stop = 2 }", "a range is"),
        ("[values]\nLEARNING_RATE = { start = 0.0, stop = 1e-3, num = 3, log = true }", "log range needs"),
        ("[values]\nGPT2_WARMUP_STEPS = ['many']", "is not an int"),
        ("[values]\nLEARNING_RATE = [1e-3]\ntraining.learning_rate = [2e-3]", "swept twice"),
        ("[values]\nOPTIMIZER_ENABLE_ADAMW = [true, false]", "matrix's own selection"),
        ("metric = 'accuracy'\n[values]\nSEED = [1]", "choose one of final_val_ppl"),
        ("[value]\nSEED = [1]", "unknown top-level key"),
        ("[values\nSEED = [1]", "not valid TOML"),
    ],
)
def test_bad_sweep_files_are_refused_with_what_to_write(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_sweep(text, "my.sweep.toml")


def test_a_missing_sweep_file_says_where_they_live(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_sweep(tmp_path / "nope.sweep.toml")


def test_every_combination_is_checked_against_the_base_before_anything_runs():
    base = Settings().replace({"training.min_lr": 5e-4})
    with pytest.raises(ValueError, match="learning_rate=0.0001.*min_lr"):
        expand(base, parse_sweep("[values]\nLEARNING_RATE = [1e-4, 1e-3]"))


def test_sweep_runs_cross_the_matrix_and_are_named_after_their_values():
    base = Settings().replace(
        {"matrix.enabled": True, "matrix.multiple_optimizers": True, "matrix.adamwprune": False}
    )
    runs, _ = expand(base, parse_sweep("[values]\nLEARNING_RATE = [3e-4, 1e-3]\nSPAM_THETA = [50]"))
    names = [r.name for r in runs]
    assert names == [
        "gpt2_adamw_none_learning_rate0.0003_spam_theta50.0",
        "gpt2_adamw_none_learning_rate0.001_spam_theta50.0",
        "gpt2_adamwspam_none_learning_rate0.0003_spam_theta50.0",
        "gpt2_adamwspam_none_learning_rate0.001_spam_theta50.0",
    ]
    assert runs[0].overrides()["training.learning_rate"] == 3e-4
    assert runs[0].overrides()["optimizer.spam_theta"] == 50.0
    flags = run_test_matrix.flags_for(runs[0])
    assert flags[-4:] == ["--set", "training.learning_rate=0.0003", "--set", "optimizer.spam_theta=50.0"]
    assert label("runtime.compile", False) == "compilen" and label("training.min_lr", 0.5) == "min_lr0.5"


def test_close_values_get_distinct_faithful_names_and_a_repeated_value_is_refused():
    runs, _ = expand(Settings(), parse_sweep("[values]\nLEARNING_RATE = [1.5e-3, 2e-3, 1.2345e-4]"))
    assert [r.name.split("_")[-1] for r in runs] == ["rate0.0015", "rate0.002", "rate0.00012345"]
    with pytest.raises(ValueError, match=r"LEARNING_RATE: 0.002 given more than once"):
        parse_sweep("[values]\nLEARNING_RATE = [2e-3, 0.002]")
    with pytest.raises(ValueError, match=r"BATCH_SIZE: 0, 5000 out of range: Kconfig allows 1..4096"):
        parse_sweep("[values]\nBATCH_SIZE = [0, 8, 5000]")


def test_a_sweep_may_not_vary_what_the_matrix_varies():
    base = Settings().replace({"matrix.enabled": True, "matrix.multiple_pruning": True})
    with pytest.raises(ValueError, match="already varies"):
        expand(base, parse_sweep("[values]\nTARGET_SPARSITY = [0.5, 0.7]"))


def test_set_overrides_any_setting_on_the_command_line(tiny_config, tmp_path, capsys):
    from gpt2 import train

    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "2", "--eval-interval", "2"]
    assert train.main([*argv, "--set", "SPAM_THETA=7.5", "--set", "training.warmup_steps=1"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    # training.warmup_steps is the path of an older version (MOVED_FIELDS): it still sets the field
    assert settings["optimizer"]["spam_theta"] == 7.5 and settings["training"]["lr_warmup_steps"] == 1
    assert train.main([*argv, "--set", "SPAM_THETA"]) == 2
    assert "write SYMBOL=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_sweep_runs_resumes_and_reports_a_leaderboard(tmp_path, kconf, data_dir, monkeypatch):
    config = make_config(
        tmp_path,
        TINY_RUN + f'CONFIG_GPT2_MAX_ITERS=6\nCONFIG_GPT2_EVAL_INTERVAL=6\nCONFIG_DATA_DIR="{data_dir}"\n',
        kconf,
    )
    sweep_file = tmp_path / "lr.sweep.toml"
    sweep_file.write_text("[values]\nLEARNING_RATE = [1e-4, 3e-3]\n")
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(config), "--sweep", str(sweep_file)]
    assert run_test_matrix.main(argv) == 0
    (results,) = tmp_path.glob("test_matrix_results_*")
    summary = json.loads((results / "summary.json").read_text())
    assert sorted(r["status"] for r in summary["runs"]) == ["completed", "completed"]
    assert {r["swept"]["training.learning_rate"] for r in summary["runs"]} == {1e-4, 3e-3}
    report = (results / "summary.md").read_text()
    assert "## Sweep leaderboard (final_val_ppl, lower is better)" in report
    assert (results / "sweep.png").stat().st_size > 0 and (results / "sweep.toml").is_file()
    finished = {p: p.stat().st_mtime for p in results.glob("*/summary.json")}
    assert run_test_matrix.main(argv) == 0  # same config and sweep: the same folder, nothing rerun
    assert {p: p.stat().st_mtime for p in results.glob("*/summary.json")} == finished


def test_the_example_sweep_file_loads_against_its_defconfig(kconf, tmp_path):
    from lib.config.load import load_settings

    config = make_config(tmp_path, (ROOT / "defconfigs" / "gpt2-tiny-cpu").read_text(), kconf)
    runs, _ = expand(load_settings(config), load_sweep(ROOT / "defconfigs" / "gpt2-tiny-cpu.sweep.toml"))
    assert len(runs) == 6
