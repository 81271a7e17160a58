"""The pruners' builders: PRUNERS maps each of METHODS (lib/pruning) but AdamWPrune's state pruning
(lib/adamwprune/build.py) to a builder (None: dense)."""

from collections.abc import Callable

import torch
import torch.nn as nn

from lib.pruning import METHODS, PruningSettings
from lib.pruning.pruner import MovementPruner, Pruner
from lib.pruning.scores import ScoreFn, magnitude_score


def build_magnitude(model, optimizer, s: PruningSettings, total_iters: int) -> Pruner:
    return build_scored(model, optimizer, s, total_iters, magnitude_score, needs_state=False)


def build_movement(model, optimizer, s: PruningSettings, total_iters: int) -> Pruner:
    return MovementPruner(model, optimizer, s, total_iters)


def build_scored(
    model, optimizer, s: PruningSettings, total_iters: int, score: ScoreFn, needs_state: bool
) -> Pruner:
    """A pruner by any score of (weight, exp_avg, exp_avg_sq), on the shared schedule: what
    AdamWPrune's variants use (lib/adamwprune/build.py)."""
    return Pruner(model, optimizer, s, total_iters, score, needs_state=needs_state)


PRUNERS: dict[str, Callable[..., Pruner | None] | None] = {
    "none": None,
    "magnitude": build_magnitude,
    "movement": build_movement,
}
STATE = "state"  # AdamWPrune's method, built by lib/adamwprune/build.py


def build_pruner(
    model: nn.Module, optimizer: torch.optim.Optimizer, s: PruningSettings, total_iters: int
) -> Pruner | None:
    """The pruner named by `s.method` (None for dense training); state pruning is AdamWPrune's."""
    if s.method not in PRUNERS:
        raise ValueError(f"{s.method!r} pruning is built with its optimizer: lib/adamwprune/build.py")
    builder = PRUNERS[s.method]
    return None if builder is None else builder(model, optimizer, s, total_iters)


if (*PRUNERS, STATE) != METHODS:
    raise ImportError(
        "lib/pruning/build.py: PRUNERS and state pruning must build exactly lib/pruning's METHODS"
    )
