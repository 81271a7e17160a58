"""The test matrix as data: the selection from Kconfig, expanded into named runs.

Every combination of the selected optimizers, pruning methods, AdamWPrune
variants, sparsities and repeats is considered; those that make no sense are
dropped with the reason, the rest become runs that differ from the base
settings only in what the matrix varies.
"""

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from lib.adamwprune import VARIANTS, run_identity
from lib.fields import SettingsError
from lib.optim import OPTIMIZERS
from lib.pruning import METHODS, PAIRINGS
from lib.study.settings import SPARSITIES, MatrixSettings, selection_field
from lib.study.sweep import check_combinations, label


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One training run of the matrix."""

    name: str
    optimizer: str
    method: str
    variant: str | None
    sparsity: float | None
    seed: int
    swept: tuple[tuple[str, Any], ...] = ()
    """(settings path, value) pairs of a sweep (lib/study/sweep.py)."""
    label: str | None = None
    """The class (its folder) this run's model learns, in a generative classifier (lib/classify)."""
    model_set: str | None = None
    """The classifier this class model belongs to: the run's name without its class."""

    def overrides(self) -> dict:
        """Dotted-path settings overrides that turn the base settings into this run's."""
        o = {"optimizer.name": self.optimizer, "pruning.method": self.method, "runtime.seed": self.seed}
        if self.variant is not None:
            o["adamwprune.variant"] = self.variant
        if self.sparsity is not None:
            o["pruning.target_sparsity"] = self.sparsity
        if self.label is not None:
            o["data.dataset"], o["data.classify_label"] = "classify", self.label
        o.update(self.swept)
        return o


def _selected(m: MatrixSettings, kind: str, names: Iterable) -> list:
    """The entries of a registry whose matrix selection (MatrixSettings) is on, in registry order."""
    return [name for name in names if getattr(m, selection_field(kind, name))]


def with_sweep(runs: list[PlannedRun], settings, sweep) -> list[PlannedRun]:
    """Each run once per combination of the sweep's values, named after them."""
    m = settings.matrix
    varied = {
        "optimizer.name": m.multiple_optimizers,
        "adamwprune.variant": m.multiple_optimizers,
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
    names = [r.name for r in out]
    if len(set(names)) < len(names):  # labels are exact, so only a bug could get here
        raise SettingsError(
            f"two runs of the sweep would share a name: {sorted({n for n in names if names.count(n) > 1})}"
        )
    return out


def with_classes(runs: list[PlannedRun], classes: list[str]) -> list[PlannedRun]:
    """Each run once per class of a generative classifier: `<run>_class-<class>`, one model each."""
    return [
        replace(run, name=f"{run.name}_class-{label}", label=label, model_set=run.name)
        for run in runs
        for label in classes
    ]


def expand(settings, sweep=None, classes: list[str] | None = None) -> tuple[list[PlannedRun], list[str]]:
    """All runs of the matrix (times the sweep's combinations, times the classifier's classes), and a
    line per dropped kind saying why."""
    m = settings.matrix
    if m.multiple_optimizers:
        optimizers = _selected(m, "optimizer", OPTIMIZERS)
        variants = _selected(m, "variant", VARIANTS)
    else:
        optimizers, variants = [settings.optimizer.name], [settings.adamwprune.variant]
    if m.multiple_pruning:
        methods = _selected(m, "method", METHODS)
        sparsities = [p / 100 for p in _selected(m, "sparsity", SPARSITIES)]
    else:
        methods, sparsities = [settings.pruning.method], [settings.pruning.target_sparsity]
    if "adamwprune" in optimizers and not variants:
        raise SettingsError(
            "adamwprune is selected but no AdamWPrune variant (GPT2_ADAMWPRUNE_VARIANT_<NAME>)"
        )
    if any(x != "none" for x in methods) and not sparsities:
        raise SettingsError("pruning methods are selected but no sparsity (SPARSITY_ENABLE_<PERCENT>)")

    runs: dict[str, PlannedRun] = {}
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
        identity = run_identity(opt, method, sparsity, variant, settings.adamwprune.base)
        if variant is not None and identity.variant is None and m.multiple_optimizers:
            drop("AdamWPrune variants apply to adamwprune only", f"{opt} x {variant}")
        if sparsity is not None and identity.sparsity is None and m.multiple_pruning:
            drop(
                "a target sparsity applies only with a pruning method",
                f"{opt} + none x {round(100 * sparsity)}%",
            )
        for r in range(m.repeats):
            seed = settings.runtime.seed + r
            name = identity.name(seed if m.repeats > 1 else None, m.name_tag)
            runs.setdefault(name, PlannedRun(name, opt, method, identity.variant, identity.sparsity, seed))
    notes = [f"dropped ({why}): {', '.join(sorted(items))}" for why, items in sorted(dropped.items())]
    planned = list(runs.values())
    if sweep is not None:
        planned = with_sweep(planned, settings, sweep)
    return (with_classes(planned, classes) if classes else planned), notes
