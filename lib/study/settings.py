"""What the test matrix varies, as plain data (no torch): MatrixSettings.

Its selections come from the registries: one bool per optimizer (lib/optim OPTIMIZERS), AdamWPrune
variant (lib/adamwprune VARIANTS), pruning method (lib/pruning METHODS) and
sparsity (SPARSITIES), each read from the Kconfig symbol the seed project used
(OPTIMIZER_ENABLE_<NAME>, GPT2_ADAMWPRUNE_VARIANT_<NAME>, PRUNING_ENABLE_<NAME>,
SPARSITY_ENABLE_<PERCENT>). A new entry in a registry is a new selection here, with no edit.
"""

import dataclasses
import shlex
from dataclasses import field

from lib.adamwprune import VARIANTS
from lib.fields import check, kc
from lib.optim import OPTIMIZERS
from lib.pruning import METHODS

SPARSITIES = (50, 70, 90, 95, 99)
# kind -> (the registry, the Kconfig symbol of an entry's selection, the entries selected by default)
SELECTIONS = {
    "optimizer": (OPTIMIZERS, "OPTIMIZER_ENABLE_{}", ("adamw", "adamwspam", "adamwprune")),
    "variant": (tuple(VARIANTS), "GPT2_ADAMWPRUNE_VARIANT_{}", ("bitter0",)),
    "method": (METHODS, "PRUNING_ENABLE_{}", ("none", "magnitude", "state")),
    "sparsity": (SPARSITIES, "SPARSITY_ENABLE_{}", (50,)),
}


def selection_field(kind: str, name) -> str:
    """The MatrixSettings field of one registry entry: adamw, bitter1, prune_none, sparsity_70."""
    if kind == "sparsity":
        return f"sparsity_{name}"
    return "prune_none" if (kind, name) == ("method", "none") else name


def _fields() -> list:
    def setting(default, symbol: str, doc: str = ""):
        return field(default=default, metadata={**kc(symbol, resumable=True), "doc": doc})

    out = [
        ("enabled", bool, setting(False, "TEST_MATRIX_MODE")),
        ("multiple_optimizers", bool, setting(False, "OPTIMIZER_MODE_MULTIPLE")),
        ("multiple_pruning", bool, setting(False, "PRUNING_MODE_MULTIPLE")),
    ]
    for kind, (names, symbol, on) in SELECTIONS.items():
        out += [
            (selection_field(kind, n), bool, setting(n in on, symbol.format(str(n).upper()))) for n in names
        ]
    return out + [
        ("repeats", int, setting(1, "TEST_MATRIX_REPEATS")),
        (
            "name_tag",
            str,
            setting("", "TEST_MATRIX_NAME_TAG", "appended to every run name (before _s<seed>)"),
        ),
        ("parallel", int, setting(1, "TEST_MATRIX_PARALLEL")),
        ("slurm_args", str, setting("", "TEST_MATRIX_SLURM_ARGS", "extra sbatch options for --slurm")),
        (
            "slurm_signal",
            int,
            setting(
                300,
                "TEST_MATRIX_SLURM_SIGNAL",
                "seconds before a task's time limit to checkpoint and requeue it (0: off)",
            ),
        ),
        (
            "slurm_max_parallel",
            int,
            setting(0, "TEST_MATRIX_SLURM_MAX_PARALLEL", "array tasks at once (0: no cap)"),
        ),
    ]


def _check(self) -> None:
    check(self, "repeats", 1 <= self.repeats <= 100, "1..100")
    check(
        self,
        "name_tag",
        all(c.isalnum() or c in "-." for c in self.name_tag),
        "letters, digits, '-' and '.' (or empty)",
    )
    check(self, "parallel", self.parallel >= 1, "1 or more")
    check(self, "slurm_max_parallel", self.slurm_max_parallel >= 0, "0 (no cap) or more")
    check(self, "slurm_signal", 0 <= self.slurm_signal <= 3600, "0 (off) to 3600 seconds")
    try:
        shlex.split(self.slurm_args)
    except ValueError as e:
        check(self, "slurm_args", False, f"options a shell can split ({e})")


MatrixSettings = dataclasses.make_dataclass(
    "MatrixSettings",
    _fields(),
    namespace={
        "__post_init__": _check,
        "__doc__": 'What the test matrix varies (the "Test matrix" selections in Kconfig).',
    },
    frozen=True,
    kw_only=True,
    slots=True,
)
MatrixSettings.__module__ = __name__
