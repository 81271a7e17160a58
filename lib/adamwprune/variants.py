"""AdamWPrune's variants: how each scores the weights from the optimizer's own moments.

A score is a pure function score(weight, exp_avg, exp_avg_sq) -> Tensor of the weight's shape;
low scores are pruned first (lib/pruning/pruner.py). Plain data at import (no torch), so the
settings check variant names without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lib.pruning.scores import STATE_EPS, ScoreFn, magnitude_score

if TYPE_CHECKING:
    import torch


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
    """An AdamWPrune variant: its score, whether the score reads the moments, and whether it
    spends saved resources (bitter2: lib/adamwprune.bitter2_overrides)."""

    score: ScoreFn
    needs_state: bool
    scaled: bool = False
    description: str = ""


VARIANTS: dict[str, Variant] = {
    "bitter0": Variant(hybrid_momentum_stability_score, True, description="hybrid momentum x stability"),
    "bitter1": Variant(magnitude_score, False, description="pure magnitude |w|"),
    "bitter2": Variant(magnitude_score, False, scaled=True, description="bitter1 plus the saved resources"),
}
