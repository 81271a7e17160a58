"""Importance scores: which weights matter. Low scores are pruned first.

Each score is a pure function score(weight, exp_avg, exp_avg_sq) -> Tensor of the
weight's shape. Magnitude and movement pruning use their own; state pruning
(AdamWPrune) picks one of ADAMWPRUNE_VARIANTS, scored from Adam's moments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lib.config.fields import SettingsError

if TYPE_CHECKING:  # plain data at import: the settings check variant names without torch
    import torch

ScoreFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor | None"], "torch.Tensor"]
STATE_EPS = 1e-8


def magnitude_score(w: torch.Tensor, exp_avg=None, exp_avg_sq=None) -> torch.Tensor:
    """|w|: small weights matter least (Han et al., 2015; Zhu & Gupta, 2017)."""
    return w.abs()


def hybrid_momentum_stability_score(
    w: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor
) -> torch.Tensor:
    """bitter0: |w * m| * |w| / (sqrt(v) + eps).

    Momentum times weight (how much the optimizer is pushing a weight that is
    large), weighted by the weight's magnitude over its gradient's RMS (how
    stable it is): the seed project's original AdamWPrune score.
    """
    return (w * exp_avg).abs() * w.abs() / (exp_avg_sq.sqrt() + STATE_EPS)


@dataclass(frozen=True, slots=True)
class Variant:
    """An AdamWPrune variant: its score, and whether it spends saved resources (bitter2)."""

    score: ScoreFn
    needs_state: bool
    scaled: bool = False
    description: str = ""


ADAMWPRUNE_VARIANTS: dict[str, Variant] = {
    "bitter0": Variant(hybrid_momentum_stability_score, True, description="hybrid momentum x stability"),
    "bitter1": Variant(magnitude_score, False, description="pure magnitude |w|"),
    "bitter2": Variant(magnitude_score, False, scaled=True, description="bitter1 plus the saved resources"),
}

# bitter2 spends what state pruning saves: (settings field scaled, factor).
BITTER2_SCALINGS: dict[str, tuple[str, float]] = {
    "iterations": ("training.max_iters", 1.21),
    "batch": ("training.batch_size", 1.14),
}


def bitter2_overrides(settings) -> tuple[dict, dict | None]:
    """The settings overrides bitter2 applies, and a record of them for the summary.

    Runs with another optimizer or variant get none. The factors are the seed
    project's: 21% more iterations (10000 -> 12100) or a 14% larger batch.
    """
    p = settings.pruning
    if settings.optimizer.name != "adamwprune" or not ADAMWPRUNE_VARIANTS[p.adamwprune_variant].scaled:
        return {}, None
    path, factor = BITTER2_SCALINGS[p.bitter2_scaling]
    if path == "training.batch_size" and settings.training.batch_mode == "auto":
        path = "training.target_batch"  # the micro-batch is chosen; scale what the user set
    section, name = path.split(".")
    before = getattr(getattr(settings, section), name)
    if before == 0:
        raise SettingsError(
            "bitter2's iteration scaling needs GPT2_MAX_ITERS > 0 (it scales the step count); "
            "set it, or choose the batch scaling (ADAMWPRUNE_BITTER2_SCALING)"
        )
    after = round(before * factor)
    return {path: after}, {"setting": path, "factor": factor, "from": before, "to": after}


def bitter2_unscaled(settings) -> dict:
    """The override that undoes bitter2_overrides on settings it produced (a run's saved settings).
    Exact for factors above 1: the scaled value is round(x * factor), off x * factor by at most 0.5,
    so dividing by the factor lands within 0.5 / factor of x."""
    _, record = bitter2_overrides(settings)
    return {} if record is None else {record["setting"]: round(record["from"] / record["factor"])}
