"""The test matrix as data: the selection from Kconfig, expanded into named runs.

Every combination of the selected optimizers, pruning methods, AdamWPrune
variants, sparsities and repeats is considered; those that make no sense are
dropped with the reason, the rest become runs that differ from the base
settings only in what the matrix varies.
"""

import itertools
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from lib.optim import optimizer_label
from lib.pruning import PAIRINGS
from lib.validate import SettingsError, kc

SPARSITIES = (50, 70, 90, 95, 99)


@dataclass(frozen=True, kw_only=True, slots=True)
class MatrixSettings:
    """What the test matrix varies (the "Test matrix" selections in Kconfig)."""

    enabled: bool = field(default=False, metadata=kc("TEST_MATRIX_MODE", resumable=True))
    multiple_optimizers: bool = field(default=False, metadata=kc("OPTIMIZER_MODE_MULTIPLE", resumable=True))
    multiple_pruning: bool = field(default=False, metadata=kc("PRUNING_MODE_MULTIPLE", resumable=True))
    adamw: bool = field(default=True, metadata=kc("OPTIMIZER_ENABLE_ADAMW", resumable=True))
    adamwspam: bool = field(default=True, metadata=kc("OPTIMIZER_ENABLE_ADAMWSPAM", resumable=True))
    adamwprune: bool = field(default=True, metadata=kc("OPTIMIZER_ENABLE_ADAMWPRUNE", resumable=True))
    bitter0: bool = field(default=True, metadata=kc("GPT2_ADAMWPRUNE_VARIANT_BITTER0", resumable=True))
    bitter1: bool = field(default=False, metadata=kc("GPT2_ADAMWPRUNE_VARIANT_BITTER1", resumable=True))
    bitter2: bool = field(default=False, metadata=kc("GPT2_ADAMWPRUNE_VARIANT_BITTER2", resumable=True))
    prune_none: bool = field(default=True, metadata=kc("PRUNING_ENABLE_NONE", resumable=True))
    magnitude: bool = field(default=True, metadata=kc("PRUNING_ENABLE_MAGNITUDE", resumable=True))
    movement: bool = field(default=False, metadata=kc("PRUNING_ENABLE_MOVEMENT", resumable=True))
    state: bool = field(default=True, metadata=kc("PRUNING_ENABLE_STATE", resumable=True))
    sparsity_50: bool = field(default=True, metadata=kc("SPARSITY_ENABLE_50", resumable=True))
    sparsity_70: bool = field(default=False, metadata=kc("SPARSITY_ENABLE_70", resumable=True))
    sparsity_90: bool = field(default=False, metadata=kc("SPARSITY_ENABLE_90", resumable=True))
    sparsity_95: bool = field(default=False, metadata=kc("SPARSITY_ENABLE_95", resumable=True))
    sparsity_99: bool = field(default=False, metadata=kc("SPARSITY_ENABLE_99", resumable=True))
    repeats: int = field(default=1, metadata=kc("TEST_MATRIX_REPEATS", resumable=True))
    name_tag: str = field(default="", metadata=kc("TEST_MATRIX_NAME_TAG", resumable=True))
    """Appended to every run name (before _s<seed>): an ablation's runs never share a name."""
    parallel: int = field(default=1, metadata=kc("TEST_MATRIX_PARALLEL", resumable=True))
    slurm_args: str = field(default="", metadata=kc("TEST_MATRIX_SLURM_ARGS", resumable=True))
    """Extra sbatch options for --slurm submissions (partition, time limit, account)."""
    slurm_max_parallel: int = field(default=0, metadata=kc("TEST_MATRIX_SLURM_MAX_PARALLEL", resumable=True))
    """At most this many array tasks at once (0: as many as Slurm allows)."""

    def __post_init__(self) -> None:
        from lib.validate import check

        check(self, "repeats", 1 <= self.repeats <= 100, "1..100")
        check(
            self,
            "name_tag",
            all(c.isalnum() or c in "-." for c in self.name_tag),
            "letters, digits, '-' and '.' (or empty)",
        )
        check(self, "parallel", self.parallel >= 1, "1 or more")
        check(self, "slurm_max_parallel", self.slurm_max_parallel >= 0, "0 (no cap) or more")
        try:
            shlex.split(self.slurm_args)
        except ValueError as e:
            check(self, "slurm_args", False, f"options a shell can split ({e})")


@dataclass(frozen=True, slots=True)
class Run:
    """One training run of the matrix."""

    name: str
    optimizer: str
    method: str
    variant: str | None
    sparsity: float | None
    seed: int
    swept: tuple[tuple[str, Any], ...] = ()
    """(settings path, value) pairs of a sweep (lib/sweep.py)."""

    def overrides(self) -> dict:
        """Dotted-path settings overrides that turn the base settings into this run's."""
        o = {"optimizer.name": self.optimizer, "pruning.method": self.method, "runtime.seed": self.seed}
        if self.variant is not None:
            o["optimizer.adamwprune_variant"] = self.variant
        if self.sparsity is not None:
            o["pruning.target_sparsity"] = self.sparsity
        o.update(self.swept)
        return o


def run_name(
    optimizer: str, method: str, variant: str | None, sparsity: float | None, seed: int | None, tag: str = ""
) -> str:
    """gpt2_<optimizer>[_<variant>]_<pruning>[_<sparsity%>][_<tag>][_s<seed>], as the seed project named runs."""
    parts = ["gpt2", optimizer, *([variant] if variant else []), method]
    if sparsity is not None:
        parts.append(str(round(100 * sparsity)))
    if tag:
        parts.append(tag)
    if seed is not None:
        parts.append(f"s{seed}")
    return "_".join(parts)


def _selected(pairs: Iterable[tuple[bool, str]]) -> list:
    return [name for on, name in pairs if on]


def with_sweep(runs: list[Run], settings, sweep) -> list[Run]:
    """Each run once per combination of the sweep's values, named after them."""
    from lib.sweep import check_combinations, label

    m = settings.matrix
    varied = {
        "optimizer.name": m.multiple_optimizers,
        "optimizer.adamwprune_variant": m.multiple_optimizers,
        "pruning.method": m.multiple_pruning,
        "pruning.target_sparsity": m.multiple_pruning,
    }
    clash = [p for p in sweep.values if varied.get(p) or (p == "runtime.seed" and m.repeats > 1)]
    if clash:
        raise SettingsError(
            f"the sweep varies {', '.join(clash)}, which the test matrix already varies; "
            "sweep it with a single optimizer/pruning mode, or drop it from the sweep"
        )
    check_combinations(settings, sweep)
    out = []
    for run in runs:
        for combo in sweep.combinations():
            name = "_".join([run.name, *(label(p, v) for p, v in combo.items())])
            out.append(replace(run, name=name, swept=tuple(combo.items())))
    return out


def expand(settings, sweep=None) -> tuple[list[Run], list[str]]:
    """All runs of the matrix (times the sweep's combinations), and a line per dropped kind saying why."""
    m = settings.matrix
    if m.multiple_optimizers:
        optimizers = _selected([(m.adamw, "adamw"), (m.adamwspam, "adamwspam"), (m.adamwprune, "adamwprune")])
        variants = _selected([(m.bitter0, "bitter0"), (m.bitter1, "bitter1"), (m.bitter2, "bitter2")])
    else:
        optimizers, variants = [settings.optimizer.name], [settings.optimizer.adamwprune_variant]
    if m.multiple_pruning:
        methods = _selected(
            [(m.prune_none, "none"), (m.magnitude, "magnitude"), (m.movement, "movement"), (m.state, "state")]
        )
        flags = (m.sparsity_50, m.sparsity_70, m.sparsity_90, m.sparsity_95, m.sparsity_99)
        sparsities = [p / 100 for on, p in zip(flags, SPARSITIES, strict=True) if on]
    else:
        methods, sparsities = [settings.pruning.method], [settings.pruning.target_sparsity]
    if "adamwprune" in optimizers and not variants:
        raise SettingsError(
            "adamwprune is selected but no AdamWPrune variant (GPT2_ADAMWPRUNE_VARIANT_BITTER0/1/2)"
        )
    if any(x != "none" for x in methods) and not sparsities:
        raise SettingsError("pruning methods are selected but no sparsity (SPARSITY_ENABLE_50/70/90/95/99)")

    runs: dict[str, Run] = {}
    dropped: dict[str, set[str]] = {}

    def drop(why: str, what: str) -> None:
        dropped.setdefault(why, set()).add(what)

    for opt, method, variant, sparsity in itertools.product(
        optimizers, methods, variants or [None], sparsities or [None]
    ):
        if opt not in PAIRINGS[method]:
            why = (
                "adamwprune always prunes by its own states: pair it with state pruning"
                if opt == "adamwprune"
                else f"{method} pruning pairs only with {' or '.join(PAIRINGS[method])}"
            )
            drop(why, f"{opt} + {method}")
            continue
        if opt != "adamwprune" and variant is not None:
            if m.multiple_optimizers:
                drop("AdamWPrune variants apply to adamwprune only", f"{opt} x {variant}")
            variant = None
        if method == "none" and sparsity is not None:
            if m.multiple_pruning:
                drop(
                    "a target sparsity applies only with a pruning method",
                    f"{opt} + none x {round(100 * sparsity)}%",
                )
            sparsity = None
        for r in range(m.repeats):
            seed = settings.runtime.seed + r
            shown = optimizer_label(opt, settings.optimizer.adamwprune_base)
            name = run_name(shown, method, variant, sparsity, seed if m.repeats > 1 else None, m.name_tag)
            runs.setdefault(name, Run(name, opt, method, variant, sparsity, seed))
    notes = [f"dropped ({why}): {', '.join(sorted(items))}" for why, items in sorted(dropped.items())]
    planned = list(runs.values())
    return (planned if sweep is None else with_sweep(planned, settings, sweep)), notes
