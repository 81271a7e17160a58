"""Seed-project defconfigs in our terms (lib/config/migrate.py): every line accounted for, the result strict."""

import pytest

from lib.config.kconfig import apply_config, config_values, parse_config_lines
from lib.config.load import settings_from_config
from lib.config.migrate import MigrationError, migrate, read_seed_lines
from lib.study.matrix import expand
from scripts import migrate_defconfig

from .conftest import ROOT

SEEDS = ROOT / "tests" / "seed_defconfigs"
FAMILIES = sorted(p.name for p in SEEDS.iterdir() if p.name.startswith("gpt2-"))


def migrated(kconf, tmp_path, name: str):
    """The migration of one seed file, loaded strictly: (Migration, Settings)."""
    m = migrate(SEEDS / name, ROOT / "Kconfig")
    out = tmp_path / name
    out.write_text(m.text())
    apply_config(kconf, out)  # raises on any line that does not take effect
    return m, settings_from_config(config_values(kconf))


def runs(settings) -> list[str]:
    return sorted(r.name for r in expand(settings)[0])


def test_all_eight_seed_families_are_here():
    assert len(FAMILIES) == 8
    for family in (
        "conservative",
        "simple",
        "l4",
        "w7900",
        "matrix",
        "vanilla-baseline",
        "ra-mla-baseline",
        "bitter-lesson",
    ):
        assert any(family in name for name in FAMILIES), family


@pytest.mark.parametrize("name", FAMILIES)
def test_every_seed_line_is_mapped_or_dropped_with_a_reason_and_the_result_loads(kconf, tmp_path, name):
    m, _ = migrated(kconf, tmp_path, name)
    _, seed_lines = read_seed_lines(SEEDS / name)
    mapped, dropped = m.counts()
    assert mapped + dropped == len(seed_lines) and mapped > 10
    assert all(why for _, why in m.dropped)
    text = m.text()
    assert f"{mapped} lines mapped, {dropped} dropped" in text
    assert all(f"line {s.lineno}:" in text for s, _ in m.dropped)  # each dropped line listed with its reason
    ours = parse_config_lines(tmp_path / name, text)
    assert len({a.name for a in ours}) == len(ours)  # one line per setting


def test_conservative_and_simple_keep_their_single_runs(kconf, tmp_path):
    m, s = migrated(kconf, tmp_path, "gpt2-shakespeare-conservative")
    # CONFIG_BATCH_SIZE=8  # ...: a Kconfig tool rejects the int with its comment, so the default ran
    assert (s.model.name, s.model.block_size, s.training.batch_size, s.training.gradient_accumulation) == (
        "gpt2",
        256,
        12,
        2,
    )
    assert any(d.name == "BATCH_SIZE" and "trailing comment" in why for d, why in m.dropped)
    assert (s.optimizer.name, s.pruning.method, s.runtime.compile, s.model.dropout) == (
        "adamw",
        "none",
        True,
        0.1,
    )
    _, s = migrated(kconf, tmp_path, "gpt2-shakespeare-simple")
    assert (s.training.batch_size, s.training.num_epochs, s.model.block_size) == (12, 0, 1024)


def test_l4_keeps_adamwprune_on_spam_and_says_momentum_pruning_is_not_built(kconf, tmp_path):
    m, s = migrated(kconf, tmp_path, "gpt2-shakespeare-l4")
    assert runs(s) == ["gpt2_adamwprune-spam_bitter0_state_50"]
    assert any("momentum pruning is not built here" in why for _, why in m.dropped)
    assert (s.optimizer.beta2, s.optimizer.spam_clip_grace_steps, s.optimizer.spam_warmup_start) == (
        0.999,
        0,
        0.001,
    )
    assert (s.pruning.pruning_warmup, s.pruning.frequency) == (1000, 50)
    assert any("AMSGrad" in n for n in m.notes)


def test_w7900_and_matrix_run_exactly_the_seed_selection(kconf, tmp_path):
    _, s = migrated(kconf, tmp_path, "gpt2-shakespeare-w7900")
    assert runs(s) == ["gpt2_adamwprune-spam_bitter0_state_50", "gpt2_adamwspam_none"]
    _, s = migrated(kconf, tmp_path, "gpt2-shakespeare-matrix")
    assert runs(s) == ["gpt2_adamwprune_bitter0_state_50", "gpt2_adamwspam_none"]
    assert s.adamwprune.base == "adamw" and s.optimizer.beta2 == 0.999


def test_the_baselines_keep_length_time_budget_and_attention(kconf, tmp_path):
    _, s = migrated(kconf, tmp_path, "gpt2-vanilla-baseline")
    # CONFIG_GPT2_MAX_TIME=21600  # six hours: ignored by a Kconfig tool, so the seed ran no time budget
    assert (s.training.max_iters, s.training.max_time_seconds) == (50000, 0)
    assert (s.runtime.compile, s.model.flash_attention, s.data.dataset) == (False, False, "finewebedu")
    assert (s.tracking.tracker, s.data.data_dir) == ("trackio", "./gpt2/data")
    _, s = migrated(kconf, tmp_path, "gpt2-ra-mla-baseline")
    assert (s.model.ra_mla, s.model.ra_mla_latent_dim, s.model.ra_mla_ra_alpha) == (True, 128, 0.0)


def test_the_bitter_lesson_study_migrates_to_what_our_defconfig_of_that_name_runs(kconf, tmp_path):
    name = "gpt2-adamwprune-finewebedu-79000-bitter-lesson"
    m, s = migrated(kconf, tmp_path, name)
    apply_config(kconf, ROOT / "defconfigs" / name)
    ours = settings_from_config(config_values(kconf))
    assert (
        runs(s)
        == runs(ours)
        == [
            "gpt2_adamwprune-spam_bitter0_state_50",
            "gpt2_adamwprune-spam_bitter1_state_50",
            "gpt2_adamwprune-spam_bitter2_state_50",
            "gpt2_adamwspam_magnitude_50",
        ]
    )
    for field in ("pruning_warmup", "frequency", "ramp_end_step"):
        assert getattr(s.pruning, field) == getattr(ours.pruning, field)
    for field in ("spam_clip_grace_steps", "spam_warmup_start", "beta2"):
        assert getattr(s.optimizer, field) == getattr(ours.optimizer, field), field
    assert s.adamwprune == ours.adamwprune
    # The seed's SPAM counted two steps per iteration: its 1000s were 500 iterations, which ours runs.
    assert (s.optimizer.spam_interval, s.optimizer.spam_warmup_steps) == (1000, 1000)
    assert (ours.optimizer.spam_interval, ours.optimizer.spam_warmup_steps) == (500, 500)
    assert s.training.max_iters == 10000 and s.runtime.output_dir == "bitter_lesson_results"
    # The ramp the seed file leaves implicit: its code ramped bitter0-2 and magnitude pruning linearly.
    assert s.pruning.ramp == ours.pruning.ramp == "linear"
    assert any(d.name == "NUM_EPOCHS" and "not an int" in why for d, why in m.dropped)
    assert any("every 500 iterations" in n for n in m.notes)


def test_conflicting_spellings_are_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text(
        'CONFIG_GPT2_COMPILE=y\nCONFIG_COMPILE_MODEL=n\nCONFIG_WEIGHT_DECAY="0.1"\nCONFIG_ADAMWPRUNE_WEIGHT_DECAY="0.0"\n'
    )
    with pytest.raises(MigrationError, match="conflicting lines") as e:
        migrate(bad, ROOT / "Kconfig")
    assert "CONFIG_GPT2_COMPILE=n" in str(e.value) and "CONFIG_ADAMW_WEIGHT_DECAY" in str(e.value)


def test_the_command_writes_the_file_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "ours"
    assert migrate_defconfig.main([str(SEEDS / "gpt2-shakespeare-simple"), "--out", str(out)]) == 0
    assert "lines mapped" in capsys.readouterr().out and out.is_file()
    assert migrate_defconfig.main([str(SEEDS / "gpt2-shakespeare-simple"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert migrate_defconfig.main([str(tmp_path / "missing"), "--out", str(out)]) == 2


KCONFIG_TOOL_WARNS = [
    # (seed line, what the report says, our setting afterwards)
    ("CONFIG_NUM_EPOCHS=n  # GPT-2 uses iterations, not epochs", "is not an int", ("training.num_epochs", 0)),
    ("CONFIG_GPT2_MAX_ITERS=y", "is not an int", ("training.max_iters", 10000)),
    ("CONFIG_GPT2_INIT_FROM=n", "is not a quoted string", ("model.init_from", "")),
    ("CONFIG_BATCH_SIZE=8  # small, for little memory", "trailing comment", ("training.batch_size", 12)),
    ("CONFIG_BATCH_SIZE=100000", "out of range (allowed 1..4096", ("training.batch_size", 12)),
    ("# CONFIG_NUM_EPOCHS is not set", "'is not set' is for bool options", ("training.num_epochs", 0)),
    ("CONFIG_LENET5_NUM_CLASSES=10", "LeNet-5 or ResNet", None),
    ("CONFIG_MODEL_RESNET18=y", "LeNet-5 or ResNet", None),
    ("CONFIG_RESNET50_PRETRAINED=y", "LeNet-5 or ResNet", None),
    ('CONFIG_TEST_MODELS="lenet5"', "LeNet-5 or ResNet", None),
]


@pytest.mark.parametrize("line,why,setting", KCONFIG_TOOL_WARNS, ids=[w[0] for w in KCONFIG_TOOL_WARNS])
def test_a_line_a_kconfig_tool_only_warns_about_is_dropped_for_the_default_the_seed_ran(
    kconf, tmp_path, line, why, setting
):
    seed = tmp_path / "seed"
    seed.write_text(f"# a seed defconfig\nCONFIG_GPT2_MODEL_124M=y\n{line}\nCONFIG_GPT2_BLOCK_SIZE=256\n")
    m = migrate(seed, ROOT / "Kconfig")
    (dropped,) = [(d, w) for d, w in m.dropped if d.lineno == 3]
    assert why in dropped[1], dropped[1]
    assert f"line 3: {line}" in m.text()  # quoted as written, with its reason
    out = tmp_path / "ours"
    out.write_text(m.text())
    apply_config(kconf, out)  # our strict loader takes the result
    s = settings_from_config(config_values(kconf))
    assert s.model.block_size == 256 and s.model.name == "gpt2"
    if setting is not None:
        section, _, field = setting[0].partition(".")
        assert getattr(getattr(s, section), field) == setting[1]


@pytest.mark.parametrize(
    "line,kept,note",
    [
        ("CONFIG_GPT2_COMPILE=n  # inductor bug", "# CONFIG_GPT2_COMPILE is not set", "reads one character"),
        ('CONFIG_GPT2_MIN_LR="6e-5"  # the floor', 'CONFIG_GPT2_MIN_LR="6e-5"', "ignores '# the floor'"),
        ("CONFIG_GPT2_MAX_ITERS=5000", "CONFIG_GPT2_MAX_ITERS=5000", None),
    ],
)
def test_a_line_a_kconfig_tool_applies_is_kept_with_what_it_ignored(kconf, tmp_path, line, kept, note):
    seed = tmp_path / "seed"
    seed.write_text(f"CONFIG_GPT2_MODEL_124M=y\n{line}\n")
    m = migrate(seed, ROOT / "Kconfig")
    assert kept in m.text().splitlines() and not [d for d, _ in m.dropped if d.lineno == 2]
    assert any(note in n for n in m.notes) if note else not m.notes or all("line 2" not in n for n in m.notes)
    (tmp_path / "ours").write_text(m.text())
    apply_config(kconf, tmp_path / "ours")


def test_the_seed_bitter_lesson_file_migrates_through_the_command(tmp_path, capsys):
    out = tmp_path / "ours"
    name = "gpt2-adamwprune-finewebedu-79000-bitter-lesson"
    assert migrate_defconfig.main([str(SEEDS / name), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "dropped line 14: CONFIG_NUM_EPOCHS=n  # GPT-2 uses iterations, not epochs  -- " in report
    assert "resets every 1000 optimizer steps here" in report and "every 500 iterations" in report


def test_an_empty_or_binary_file_is_refused_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "ours"
    (tmp_path / "empty").write_text("# nothing here\n")
    (tmp_path / "binary").write_bytes(b"CONFIG_X=\xff\xfe\n")
    for name in ("empty", "binary"):
        assert migrate_defconfig.main([str(tmp_path / name), "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err and not out.exists()
