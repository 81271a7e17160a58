"""Shared fixtures: real Shakespeare tokens, a generated config.py, a tiny-run helper.

Offline data comes in through the environment (.ci/run sets both):
  SHAKESPEARE_SOURCE   a local Tiny Shakespeare input.txt (else it is downloaded)
  TIKTOKEN_CACHE_DIR   tiktoken's cache holding the GPT-2 BPE files (else downloaded)
"""

import os
import shutil
from pathlib import Path

import pytest

from gpt2.prepare_data import prepare
from lib.config.kconfig import apply_config, load_kconfig, write_outputs

ROOT = Path(__file__).resolve().parent.parent

# A few-second CPU run: the tiny model on 32-token windows, 4 sequences per step, no sample.
TINY_RUN = """CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_BATCH_SIZE=4
CONFIG_GPT2_EVAL_SAMPLES=2
CONFIG_GPT2_GENERATION_MAX_TOKENS=0
CONFIG_DEVICE="cpu"
CONFIG_GPT2_COMPILE=n
"""


GOLDEN_REPRODUCTION = pytest.StashKey()


def pytest_collection_finish(session):
    """Start the golden numbers' reproduction (a 1-thread process of its own, tests/golden.py) as
    soon as the tests that read it are collected: it then runs beside the rest of the suite."""
    if any(item.nodeid.startswith("tests/test_golden.py::test_combination") for item in session.items):
        from tests.golden import Reproduction

        session.config.stash[GOLDEN_REPRODUCTION] = Reproduction(os.environ.get("SHAKESPEARE_SOURCE"))


@pytest.fixture(scope="session")
def kconf():
    """The project's parsed Kconfig tree (re-used; tests call unset_values via apply_config)."""
    return load_kconfig(ROOT / "Kconfig")


@pytest.fixture(scope="session")
def shakespeare_source() -> str | None:
    return os.environ.get("SHAKESPEARE_SOURCE") or None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, shakespeare_source) -> Path:
    """A data/ folder with Tiny Shakespeare prepared (once per test session).

    When it cannot be made (offline without the local copies, say), the whole session stops here
    once, with what to set, rather than failing every test that needs it.
    """
    root = tmp_path_factory.mktemp("data")
    try:
        prepare("shakespeare", root, source=shakespeare_source)
    except SystemExit as e:  # prepare_data's own clear errors
        pytest.exit(
            f"the tests need Tiny Shakespeare's GPT-2 tokens and could not make them: {e}\n"
            "Offline, set SHAKESPEARE_SOURCE=/path/to/tinyshakespeare/input.txt and "
            "TIKTOKEN_CACHE_DIR=/path/to/tiktoken-cache (the GPT-2 BPE files), as .ci/run does from "
            "../shared/data; online, both are downloaded.",
            returncode=4,
        )
    return root


def make_config(tmp: Path, lines: str, kconf) -> Path:
    """Write a defconfig with `lines`, load it strictly, and generate tmp/config.py."""
    defconfig = tmp / "test-defconfig"
    defconfig.write_text(lines)
    apply_config(kconf, defconfig)
    write_outputs(kconf, tmp / ".config", tmp / "config.py")
    return tmp / "config.py"


@pytest.fixture
def tiny_config(tmp_path, kconf, data_dir) -> Path:
    """config.py for a fast CPU run: tiny model, 32-token windows, 4 sequences per step."""
    return make_config(
        tmp_path,
        f"""CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_BATCH_SIZE=4
CONFIG_GPT2_MAX_ITERS=30
CONFIG_LEARNING_RATE="2e-3"
CONFIG_GPT2_WARMUP_STEPS=5
CONFIG_GPT2_MIN_LR="2e-4"
CONFIG_GPT2_EVAL_INTERVAL=10
CONFIG_GPT2_EVAL_SAMPLES=4
CONFIG_GPT2_LOG_INTERVAL=1
CONFIG_GPT2_GENERATION_MAX_TOKENS=8
CONFIG_DEVICE="cpu"
CONFIG_GPT2_COMPILE=n
CONFIG_DATA_DIR="{data_dir}"
CONFIG_OUTPUT_DIR="{tmp_path / "runs"}"
""",
        kconf,
    )


@pytest.fixture
def defconfig_copy(tmp_path):
    """Copy a named defconfig into tmp_path (for tests that edit one)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copy(ROOT / "defconfigs" / name, dst)
        return dst

    return copy
