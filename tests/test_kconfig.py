"""Strict defconfig loading, config.py generation, and the Kconfig tree's own hygiene."""

from dataclasses import fields
from pathlib import Path

import kconfiglib
import pytest

from lib.config.kconfig import (
    DefconfigError,
    apply_config,
    config_values,
    parse_config_lines,
    render_config_py,
    write_outputs,
)
from lib.config.load import read_config_py, settings_from_config
from lib.train.settings import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
DEFCONFIGS = sorted(p.name for p in (ROOT / "defconfigs").iterdir() if not p.name.endswith(".sweep.toml"))


def load_lines(kconf, tmp_path, text: str):
    path = tmp_path / "defconfig"
    path.write_text(text)
    apply_config(kconf, path)
    return config_values(kconf)


@pytest.mark.parametrize(
    "line, expected",
    [
        # The seed project's bug: an out-of-range batch size silently became another value.
        (
            "CONFIG_BATCH_SIZE=0",
            ["defconfig:1", "CONFIG_BATCH_SIZE=0", "applied: '12'", "out of range: allowed 1..4096"],
        ),
        ("CONFIG_BATCH_SIZES=16", ["unknown symbol", "Did you mean CONFIG_BATCH_SIZE"]),
        ('CONFIG_GPT2_CUSTOM_DATASET_PATH="corpus"', ["unmet dependency", "depends on GPT2_DATASET_CUSTOM"]),
        ("CONFIG_SEED=many", ["invalid value", "'many' is not an integer"]),
        ("CONFIG_GPT2_BIAS=maybe", ["invalid value", "is not y or n"]),
        ("CONFIG_LEARNING_RATE=6e-4", ["invalid value", 'is not a quoted string ("...")']),
        ('CONFIG_GPT2_MODEL_NAME="gpt3"', ["invalid value", 'allowed "gpt2-tiny", "gpt2"']),
        ("# CONFIG_GPT2_MODEL_TINY is not set", ["choice: an entry cannot be switched off"]),
        ("BATCH_SIZE=16", ["not a Kconfig assignment"]),
    ],
)
def test_rejects_each_failure_kind(kconf, tmp_path, line, expected):
    with pytest.raises(DefconfigError) as e:
        load_lines(kconf, tmp_path, line + "\n")
    for part in expected:
        assert part in str(e.value)


def test_rejects_two_entries_of_one_choice(kconf, tmp_path):
    with pytest.raises(DefconfigError) as e:
        load_lines(kconf, tmp_path, "CONFIG_GPT2_MODEL_124M=y\nCONFIG_GPT2_MODEL_350M=y\n")
    msg = str(e.value)
    assert "defconfig:1: CONFIG_GPT2_MODEL_124M=y: did not take effect (applied: 'n')" in msg
    assert "CONFIG_GPT2_MODEL_350M at" in msg and "defconfig:2 selects another entry" in msg


def test_rejects_a_symbol_set_twice_and_reports_every_bad_line(kconf, tmp_path):
    with pytest.raises(DefconfigError) as e:
        load_lines(kconf, tmp_path, "CONFIG_SEED=1\nCONFIG_SEED=2\nCONFIG_NOPE=y\n")
    msg = str(e.value)
    assert "defconfig:2: CONFIG_SEED=2: set more than once (also at" in msg
    assert "defconfig:3: CONFIG_NOPE=y: unknown symbol" in msg


def test_accepts_values_in_range_and_dependencies_in_order(kconf, tmp_path):
    values = load_lines(
        kconf,
        tmp_path,
        'CONFIG_BATCH_SIZE=16\nCONFIG_GPT2_DATASET_CUSTOM=y\nCONFIG_GPT2_CUSTOM_DATASET_PATH="a b"\n',
    )
    assert values["BATCH_SIZE"] == 16
    assert values["GPT2_DATASET_NAME"] == "custom"
    assert values["GPT2_CUSTOM_DATASET_PATH"] == "a b"


def test_accepts_seed_spellings(kconf, tmp_path):
    values = load_lines(
        kconf,
        tmp_path,
        'CONFIG_GPT2_DATASET="finewebedu"\nCONFIG_COMPILE_MODEL=n\nCONFIG_GPT2_MODEL_NAME="gpt2-medium"\n',
    )
    assert values["GPT2_DATASET_FINEWEBEDU"] is True and values["GPT2_DATASET_NAME"] == "finewebedu"
    assert values["GPT2_COMPILE"] is False
    assert values["GPT2_MODEL_350M"] is True


def test_the_seed_projects_derived_adamwprune_base_line_is_accepted_when_it_agrees(kconf, tmp_path):
    head = "CONFIG_OPTIMIZER_SELECT_ADAMWPRUNE=y\n"
    values = load_lines(kconf, tmp_path, head + 'CONFIG_ADAMWPRUNE_BASE_OPTIMIZER_NAME="adamwspam"\n')
    assert (
        values["ADAMWPRUNE_BASE_ADAMWSPAM"] is True
        and values["ADAMWPRUNE_BASE_OPTIMIZER_NAME"] == "adamwspam"
    )
    both = head + 'CONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y\nCONFIG_ADAMWPRUNE_BASE_OPTIMIZER_NAME="adamwspam"\n'
    assert load_lines(kconf, tmp_path, both)["ADAMWPRUNE_BASE_OPTIMIZER_NAME"] == "adamwspam"
    with pytest.raises(DefconfigError, match="ADAMWPRUNE_BASE_ADAMW=y.*another entry of the same choice"):
        load_lines(
            kconf,
            tmp_path,
            head + 'CONFIG_ADAMWPRUNE_BASE_ADAMW=y\nCONFIG_ADAMWPRUNE_BASE_OPTIMIZER_NAME="adamwspam"\n',
        )


def test_seed_spellings_cannot_contradict(kconf, tmp_path):
    with pytest.raises(DefconfigError, match="also set by its other spelling CONFIG_COMPILE_MODEL to n"):
        load_lines(kconf, tmp_path, "CONFIG_COMPILE_MODEL=n\nCONFIG_GPT2_COMPILE=y\n")
    with pytest.raises(DefconfigError, match="set more than once"):
        load_lines(kconf, tmp_path, "CONFIG_GPT2_COMPILE=y\nCONFIG_GPT2_COMPILE=y\n")


def test_two_agreeing_spellings_of_one_symbol_are_one_setting(kconf, tmp_path):
    # The seed project's defconfigs set both (as seed 002's text does).
    values = load_lines(kconf, tmp_path, "CONFIG_GPT2_COMPILE=n\nCONFIG_COMPILE_MODEL=n\n")
    assert values["GPT2_COMPILE"] is False


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_every_defconfig_loads_strictly_and_is_minimal(kconf, tmp_path, name):
    """Each defconfig applies exactly, and holds only what differs from the defaults."""
    apply_config(kconf, ROOT / "defconfigs" / name)
    minimal = tmp_path / "min"
    kconf.write_min_config(str(minimal), header="")
    path = ROOT / "defconfigs" / name
    own = {(a.name, a.value) for a in parse_config_lines(path, path.read_text())}
    assert own == {(a.name, a.value) for a in parse_config_lines(minimal, minimal.read_text())}
    settings_from_config(config_values(kconf))  # and its values pass Settings' checks


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_every_defconfigs_dot_config_reloads_strictly(kconf, tmp_path, name):
    """What `make` does after a Kconfig edit or menuconfig: the .config written is read back strictly."""
    apply_config(kconf, ROOT / "defconfigs" / name)
    before = config_values(kconf)
    write_outputs(kconf, tmp_path / ".config", None)
    apply_config(kconf, tmp_path / ".config")
    assert config_values(kconf) == before


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_every_defconfig_has_a_description(name):
    first = (ROOT / "defconfigs" / name).read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20


def test_full_dot_config_round_trips_strictly(kconf, tmp_path):
    apply_config(kconf, ROOT / "defconfigs" / "gpt2-vanilla-baseline")
    write_outputs(kconf, tmp_path / ".config", tmp_path / "config.py")
    before = config_values(kconf)
    apply_config(kconf, tmp_path / ".config")
    assert config_values(kconf) == before
    assert read_config_py(tmp_path / "config.py") == before


HOSTILE = [
    '"; import os; os.system("touch PWNED"); x = "',
    "'''\nimport os\n'''",
    "line one\nline two\r\n\t\\ end",
    "\\\" \\n {CONFIG} __import__('os')",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_config_py_keeps_hostile_strings_as_data(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.py"
    path.write_text(render_config_py({"GPT2_GENERATION_PROMPT": value, "SEED": 1}, "src", "0"))
    assert read_config_py(path) == {"GPT2_GENERATION_PROMPT": value, "SEED": 1}
    assert not (tmp_path / "PWNED").exists()


def test_hostile_string_through_a_defconfig(kconf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    escaped = 'x\\"); import os; os.system(\\"touch PWNED\\"); (\\"'
    values = load_lines(kconf, tmp_path, f'CONFIG_GPT2_GENERATION_PROMPT="{escaped}"\n')
    write_outputs(kconf, tmp_path / ".config", tmp_path / "config.py")
    got = read_config_py(tmp_path / "config.py")["GPT2_GENERATION_PROMPT"]
    assert got == values["GPT2_GENERATION_PROMPT"] == 'x"); import os; os.system("touch PWNED"); ("'
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "text",
    [
        "import os\nCONFIG = {}\n",
        "CONFIG = {'A': __import__('os').system('touch PWNED')}\n",
        "CONFIG = [1, 2]\n",
        "OTHER = {}\n",
        "CONFIG = {\n",
    ],
)
def test_read_config_py_refuses_anything_but_one_literal(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.py").write_text(text)
    with pytest.raises(ValueError, match="not a generated config file"):
        read_config_py(tmp_path / "config.py")
    assert not (tmp_path / "PWNED").exists()


# --- the Kconfig tree itself ---------------------------------------------------------------


def prompted(kconf):
    return [s for s in kconf.unique_defined_syms if any(n.prompt for n in s.nodes)]


def test_every_int_option_has_a_range(kconf):
    missing = [s.name for s in prompted(kconf) if s.orig_type is kconfiglib.INT and not s.ranges]
    assert missing == []


def test_every_option_has_help_text(kconf):
    missing = [s.name for s in prompted(kconf) if s.choice is None and not any(n.help for n in s.nodes)]
    missing += [c.name or c.nodes[0].prompt[0] for c in kconf.unique_choices if not c.nodes[0].help]
    assert missing == []


def test_every_setting_has_its_symbol_and_every_option_its_setting(kconf):
    """One Kconfig symbol <-> one settings field, and defaults that agree."""
    field_symbols = {
        f.metadata["kconfig"]: (section, f) for section, cls in SECTIONS.items() for f in fields(cls)
    }
    defined = {s.name for s in kconf.unique_defined_syms}
    assert set(field_symbols) - defined == set()
    unmapped = {s.name for s in prompted(kconf) if s.choice is None} - set(field_symbols)
    assert unmapped == set()

    kconf.unset_values()
    defaults = settings_from_config(config_values(kconf))
    for symbol, (section, f) in field_symbols.items():
        sym = kconf.syms[symbol]
        if sym.visibility or not any(n.prompt for n in sym.nodes):
            assert getattr(getattr(defaults, section), f.name) == f.default, symbol
