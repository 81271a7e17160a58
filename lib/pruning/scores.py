"""Importance scores: which weights matter. Low scores are pruned first.

Each score is a pure function score(weight, exp_avg, exp_avg_sq) -> Tensor of the
weight's shape. Magnitude and movement pruning use their own; state pruning
(AdamWPrune) scores by its variant, from Adam's moments (lib/adamwprune/variants.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # plain data at import: the settings check variant names without torch
    import torch

ScoreFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor | None"], "torch.Tensor"]
STATE_EPS = 1e-8


def magnitude_score(w: torch.Tensor, exp_avg=None, exp_avg_sq=None) -> torch.Tensor:
    """|w|: small weights matter least (Han et al., 2015; Zhu & Gupta, 2017)."""
    return w.abs()
