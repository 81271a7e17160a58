"""Settings: config.py values, CLI overrides, and errors that say what is allowed."""

import argparse
from pathlib import Path

import pytest

from lib.config.cli import add_override_flags, overrides_from_args
from lib.config.kconfig import render_config_py
from lib.config.load import load_settings, settings_from_config
from lib.train.settings import Settings, SettingsError


def parse(*argv: str) -> dict:
    p = argparse.ArgumentParser()
    add_override_flags(p)
    return overrides_from_args(p.parse_args(list(argv)))


def test_config_values_become_typed_fields(tmp_path):
    path = tmp_path / "config.py"
    path.write_text(
        render_config_py(
            {"BATCH_SIZE": 32, "LEARNING_RATE": "3e-4", "GPT2_COMPILE": False, "GPT2_MODEL_NAME": "gpt2"},
            "x",
            "0",
        )
    )
    s = load_settings(path)
    assert s.training.batch_size == 32
    assert s.training.learning_rate == pytest.approx(3e-4)
    assert s.runtime.compile is False
    assert s.model.name == "gpt2"


def test_cli_overrides_win_and_only_given_flags_apply(tmp_path):
    path = tmp_path / "config.py"
    path.write_text(render_config_py({"BATCH_SIZE": 32, "SEED": 7}, "x", "0"))
    s = load_settings(path, parse("--batch-size", "8", "--no-compile", "--dtype", "fp32", "--device", "cpu"))
    assert s.training.batch_size == 8
    assert s.runtime.seed == 7
    assert s.runtime.compile is False
    assert s.runtime.dtype == "float32" and s.runtime.mixed_precision is False
    assert s.runtime.device == "cpu"


def test_seed_cli_flags_exist():
    o = parse(
        "--batch-size", "32", "--gradient-accumulation", "4", "--num-epochs", "2", "--max-iters", "9",
        "--optimizer", "adamw", "--pruning-method", "none", "--dataset", "finewebedu", "--seed", "3",
    )  # fmt: skip
    assert o["training.gradient_accumulation"] == 4 and o["training.num_epochs"] == 2
    assert o["data.dataset"] == "finewebedu" and o["pruning.method"] == "none"


def test_seed_adamwprune_command_line():
    """The seed README's `train.py --optimizer adamwprune --pruning-method state ...` works."""
    o = parse(
        "--optimizer",
        "adamwprune",
        "--pruning-method",
        "state",
        "--adamwprune-variant",
        "bitter1",
        "--target-sparsity",
        "0.5",
    )
    s = Settings().replace(o)
    assert (s.optimizer.name, s.pruning.method, s.adamwprune.variant) == (
        "adamwprune",
        "state",
        "bitter1",
    )
    assert s.pruning.target_sparsity == 0.5


def test_unknown_choice_on_the_command_line_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        parse("--optimizer", "sgd")
    err = capsys.readouterr().err
    assert "invalid choice: 'sgd'" in err and "adamw" in err


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"LEARNING_RATE": "fast"}, 'CONFIG_LEARNING_RATE = "fast" is not a number'),
        ({"LEARNING_RATE": "nan"}, "is not a finite number"),
        (
            {"GPT2_DROPOUT": "1.5"},
            "model.dropout = 1.5 is not allowed; expected a number in [0, 1). Set by CONFIG_GPT2_DROPOUT",
        ),
        (
            {"GPT2_MIN_LR": "1e-3"},
            "training.min_lr = 0.001 is not allowed; expected a number in [0, LEARNING_RATE = 0.0006]",
        ),
        ({"GPT2_MAX_ITERS": 0}, "more than 0 unless NUM_EPOCHS (--num-epochs) sets the length"),
        (
            {"DEVICE": "tpu"},
            "runtime.device = 'tpu' is not allowed; expected auto, cpu, cuda, cuda:N or mps. Set by CONFIG_DEVICE (make menuconfig) or --device",
        ),
        ({"GPT2_AMP_DTYPE": "fp8"}, "expected bfloat16 or float16"),
        ({"BATCH_SIZE": "32"}, "CONFIG_BATCH_SIZE = '32' is not an integer"),
        (
            {"GPT2_NPROC_PER_NODE": 2, "GPT2_GRADIENT_ACCUMULATION": 3},
            "GPT2_GRADIENT_ACCUMULATION=3 (--gradient-accumulation) does not divide over GPT2_NPROC_PER_NODE=2",
        ),
    ],
)
def test_bad_values_name_the_symbol_and_what_is_allowed(config, expected):
    with pytest.raises(SettingsError) as e:
        settings_from_config(config)
    assert expected in str(e.value)


def test_bad_override_names_the_flag():
    with pytest.raises(
        SettingsError, match=r"training.batch_size = 0 .* or --batch-size on the command line"
    ):
        Settings().replace({"training.batch_size": 0})


def test_missing_config_py_says_how_to_make_one(tmp_path):
    with pytest.raises(SettingsError, match="make defconfig-<name>"):
        load_settings(tmp_path / "config.py")


# Every setting a resumed run may change: how long it runs, how it reports and measures, where its
# records go, the matrix around it. Everything else changes what is computed, so a resume refuses it.
# A new field is classified here on purpose (its kc(..., resumable=...) decides; this test holds both).
RESUMABLE_BY_DESIGN = {
    "data.data_dir",
    *(
        f"training.{n}"
        for n in (
            "max_iters",
            "num_epochs",
            "max_time_seconds",
            "eval_interval",
            "log_interval",
            "save_checkpoint",
            "final_optimizer",
        )
    ),
    *(
        f"runtime.{n}"
        for n in (
            "compile",
            "compile_mode",
            "attention_backend",
            "nproc_per_node",
            "memory_check",
            "run_name",
            "output_dir",
        )
    ),
    "model.activation_checkpointing",
    "model.fused_loss",
    # the classifier's scoring happens after training
    "classify.length_normalised",
    "classify.prior",
    "classify.stride",
    "classify.score_batch",
    "classify.max_test_docs",
    "classify.baseline",
}
WHOLLY_RESUMABLE_SECTIONS = ("generation", "monitor", "inference", "downstream", "tracking", "matrix")


def test_every_field_is_classified_for_resume():
    from dataclasses import fields

    from lib.train.settings import RESUMABLE, SECTIONS

    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert isinstance(f.metadata["resumable"], bool), f"{section}.{f.name}"
    expected = set(RESUMABLE_BY_DESIGN)
    expected |= {f"{s}.{f.name}" for s in WHOLLY_RESUMABLE_SECTIONS for f in fields(SECTIONS[s])}
    assert RESUMABLE == expected
    assert "optimizer.spam_theta" not in RESUMABLE and "pruning.target_sparsity" not in RESUMABLE


@pytest.mark.parametrize("variant_was_in", ["optimizer", "pruning"])
def test_a_settings_record_from_before_a_field_moved_still_compares_as_today(variant_was_in):
    """AdamWPrune's fields moved twice: its variant and bitter2 scaling from optimizer to pruning,
    then with its base (from optimizer) into their own section. A run saved before either move
    resumes (no conflict), reads back as today's settings, and a real change is still refused."""
    from lib.train.loop import resume_conflicts
    from lib.train.settings import settings_from_dict

    today = Settings().replace(
        {"optimizer.name": "adamwprune", "pruning.method": "state", "adamwprune.base": "adamwspam"}
    )
    current = today.to_dict()
    old = {section: dict(values) for section, values in current.items()}
    moved = old.pop("adamwprune")
    old[variant_was_in]["adamwprune_variant"] = moved["variant"]
    old[variant_was_in]["bitter2_scaling"] = moved["bitter2_scaling"]
    old["optimizer"]["adamwprune_base"] = moved["base"]
    assert resume_conflicts(old, current) == []
    assert settings_from_dict(old) == today
    old[variant_was_in]["adamwprune_variant"] = "bitter1"
    assert resume_conflicts(old, current) == ["adamwprune.variant"]


def _config_of(kconf, tmp_path, defconfig: str) -> dict:
    """config.py's dict for a defconfig's text, loaded strictly."""
    from lib.config.kconfig import apply_config, config_values

    path = tmp_path / "defconfig"
    path.write_text(defconfig)
    apply_config(kconf, path)
    return config_values(kconf)


def _set(config: dict, *argv: str) -> dict:
    p = argparse.ArgumentParser()
    add_override_flags(p)
    return overrides_from_args(p.parse_args(list(argv)), lambda: config)


def test_set_takes_the_choice_entries_a_defconfig_takes(kconf, tmp_path):
    config = _config_of(
        kconf, tmp_path, "CONFIG_GPT2_DATASET_LINUXDOC=y\nCONFIG_OPTIMIZER_SELECT_ADAMWPRUNE=y\n"
    )
    assert _set(config, "--set", "GPT2_MODEL_124M=y") == {"model.name": "gpt2"}
    assert _set(config, "--set", "CONFIG_GPT2_DATASET_SHAKESPEARE=y") == {"data.dataset": "shakespeare"}
    assert _set(config, "--set", "ADAMWPRUNE_BASE_ADAMWSPAM=y") == {"adamwprune.base": "adamwspam"}
    # a flag's choice is the base the line applies to, as an earlier defconfig line would be
    adamw = _config_of(kconf, tmp_path, "CONFIG_OPTIMIZER_SELECT_ADAMW=y\n")
    assert (
        _set(
            adamw,
            "--optimizer",
            "adamwprune",
            "--pruning-method",
            "state",
            "--set",
            "ADAMWPRUNE_BASE_ADAMWSPAM=y",
        )["adamwprune.base"]
        == "adamwspam"
    )


def test_set_refuses_what_a_defconfig_refuses_with_its_reason(kconf, tmp_path):
    from lib.config.kconfig import DefconfigError

    adamw = _config_of(kconf, tmp_path, "CONFIG_OPTIMIZER_SELECT_ADAMW=y\n")
    with pytest.raises(DefconfigError, match="unmet dependency: it depends on OPTIMIZER_SELECT_ADAMWPRUNE"):
        _set(adamw, "--set", "ADAMWPRUNE_BASE_ADAMWSPAM=y")
    with pytest.raises(DefconfigError, match="is not y or n"):
        _set(adamw, "--set", "GPT2_MODEL_124M=maybe")
    with pytest.raises(SettingsError, match="asks for 'gpt2-medium'"):
        _set(adamw, "--model", "gpt2-medium", "--set", "GPT2_MODEL_124M=y")


@pytest.mark.parametrize(
    "base_text", ["", "CONFIG_OPTIMIZER_SELECT_ADAMWPRUNE=y\n"], ids=["defaults", "adamwprune"]
)
def test_every_choice_entry_is_a_set_line_exactly_when_it_is_a_defconfig_line(kconf, tmp_path, base_text):
    """--set ENTRY=y over a configuration gives what loading its defconfig plus that line gives."""
    from lib.config.kconfig import DefconfigError, apply_config, config_values

    base = _config_of(kconf, tmp_path, base_text)
    entries = sorted({s.name for c in kconf.unique_choices for s in c.syms})
    assert len(entries) > 20
    taken = 0
    for entry in (e for e in entries if f"CONFIG_{e}=" not in base_text):
        path = tmp_path / "with-line"
        path.write_text(base_text + f"CONFIG_{entry}=y\n")
        try:
            apply_config(kconf, path)
            expected = config_values(kconf)
        except DefconfigError as e:
            expected, why = None, str(e)
        try:
            overrides = _set(base, "--set", f"{entry}=y")
        except DefconfigError:
            assert expected is None, f"--set {entry}=y refused, but a defconfig takes it"
            continue
        if expected is None and f"CONFIG_{entry}=y" not in why:
            continue  # the defconfig's other line no longer applies; config.py's value is simply unused
        assert expected is not None, f"--set {entry}=y taken, but a defconfig refuses it: {why}"
        taken += 1
        try:
            want = settings_from_config(expected)
        except SettingsError:  # a pairing the settings refuse (adamwprune without state pruning)
            with pytest.raises(SettingsError):
                settings_from_config(base).replace(overrides)
            continue
        assert settings_from_config(base).replace(overrides) == want, entry
    assert 10 < taken < len(entries)  # some apply, and some are refused for what they depend on


def test_train_applies_a_choice_entry_from_set_and_refuses_one_that_does_not_apply(tiny_config, capsys):
    from gpt2 import train

    out = tiny_config.parent / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "2"]
    assert train.main([*argv, "--set", "ADAMWPRUNE_BASE_ADAMWSPAM=y"]) == 2
    err = capsys.readouterr().err
    assert "error: --set did not take effect as written" in err and "unmet dependency" in err
    assert "Traceback" not in err and not out.exists()
    flags = ["--optimizer", "adamwprune", "--pruning-method", "state", "--target-sparsity", "0.5"]
    assert (
        train.main([*argv, *flags, "--set", "ADAMWPRUNE_BASE_ADAMWSPAM=y", "--set", "PRUNING_WARMUP=0"]) == 0
    )
    assert '"adamwprune_base": "adamwspam"' in (out / "summary.json").read_text()


def test_a_record_from_before_a_setting_existed_resumes_at_its_default():
    """Checkpoints and settings.json written before the classifier (no classify section, no
    data.classify_label) compare as today's defaults: no conflict; a real change still is one."""
    from lib.train.loop import resume_conflicts

    current = Settings().to_dict()
    old = {section: dict(values) for section, values in current.items() if section != "classify"}
    del old["data"]["classify_label"]
    assert resume_conflicts(old, current) == []
    changed = Settings().replace({"classify.source": "imdb"}).to_dict()
    assert resume_conflicts(old, changed) == ["classify.source"]


def test_flags_and_config_py_keep_kconfigs_ranges(tiny_config, tmp_path, capsys):
    from gpt2 import train

    argv = ["--config", str(tiny_config), "--out-dir", str(tmp_path / "run")]
    assert train.main([*argv, "--batch-size", "100000"]) == 2
    assert (
        "--batch-size 100000 is out of range: Kconfig allows 1..4096 (CONFIG_BATCH_SIZE)"
        in capsys.readouterr().err
    )
    assert train.main([*argv, "--set", "training.batch_size=0"]) == 2
    assert "allows 1..4096" in capsys.readouterr().err
    edited = tmp_path / "config.py"
    edited.write_text(tiny_config.read_text().replace("'BATCH_SIZE': 4,", "'BATCH_SIZE': 1000000000000,"))
    assert "'BATCH_SIZE': 1000000000000" in edited.read_text()
    assert train.main(["--config", str(edited), "--out-dir", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "CONFIG_BATCH_SIZE = 1000000000000 is out of range (Kconfig allows 1..4096)" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "lines,message",
    [
        ('CONFIG_LEARNING_RATE="abc"\n', "is not a number"),
        ('CONFIG_LEARNING_RATE="nan"\n', "is not a finite number"),
        ('CONFIG_LEARNING_RATE="1e-4"\nCONFIG_GPT2_MIN_LR="1e-3"\n', "min_lr = 0.001 is not allowed"),
    ],
)
def test_a_defconfig_the_settings_refuse_is_refused_when_loaded_and_nothing_written(
    tmp_path, capsys, lines, message
):
    from scripts import kconfig as kconfig_cli

    from .conftest import ROOT

    (tmp_path / "d").write_text(lines)
    out = [
        "--kconfig",
        str(ROOT / "Kconfig"),
        "--config",
        str(tmp_path / ".config"),
        "--config-py",
        str(tmp_path / "config.py"),
    ]
    assert kconfig_cli.main([*out, "defconfig", str(tmp_path / "d")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / ".config").exists() and not (tmp_path / "config.py").exists()


@pytest.mark.parametrize(
    "edit,message",
    [
        ("'SEED': 1337,", "'SEED': 1337,\n    'SEED': 7,"),
        ("'SEED': 1337,", "'SEED': 1337,\n    'SEEED': 7,"),
    ],
    ids=["duplicate", "unknown"],
)
def test_config_py_with_a_repeated_or_unknown_key_is_refused(tiny_config, tmp_path, edit, message):
    text = tiny_config.read_text()
    assert edit in text
    edited = tmp_path / "edited.py"
    edited.write_text(text.replace(edit, message))
    with pytest.raises(
        SettingsError,
        match="more than once"
        if "SEED': 7" in message and "SEEED" not in message
        else "no Kconfig option is named SEEED",
    ):
        load_settings(edited)


@pytest.mark.parametrize("name", ["a\nb", "a\x00b", "tab\there"])
def test_a_run_name_with_a_control_character_is_refused(name):
    with pytest.raises(SettingsError, match="control characters"):
        Settings().replace({"runtime.run_name": name})
    assert parse("--run-name", "ok-name")["runtime.run_name"] == "ok-name"


def test_files_that_are_not_utf8_are_refused_without_a_traceback(tmp_path):
    from lib.config.kconfig import DefconfigError, apply_config, load_kconfig
    from lib.config.sweep import load_sweep

    from .conftest import ROOT

    for name in ("config.py", "x.sweep.toml", "defconfig"):
        (tmp_path / name).write_bytes(b"CONFIG = {'SEED': 1}  # caf\xe9\n")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(tmp_path / "config.py")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_sweep(tmp_path / "x.sweep.toml")
    with pytest.raises(DefconfigError, match="not UTF-8"):
        apply_config(load_kconfig(ROOT / "Kconfig"), tmp_path / "defconfig")


def test_every_setting_says_what_it_is_beside_its_code():
    """Each section's fields carry a docstring where they are declared (torchtitan's components do),
    beside the Kconfig help text the user reads. MatrixSettings is generated from the registries (one
    bool per entry), so it has no declarations to document."""
    import ast
    import sys

    from lib.train.settings import SECTIONS

    bare, read = [], []
    for section, cls in SECTIONS.items():
        tree = ast.parse(Path(sys.modules[cls.__module__].__file__).read_text())
        found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
        if not found:
            continue
        read.append(section)
        body = found[0].body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                after = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
                    bare.append(f"{section}.{node.target.id}")
    assert set(SECTIONS) - set(read) == {"matrix"}
    assert bare == []
