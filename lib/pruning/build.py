"""The pruners' builders: PRUNERS maps each of METHODS (lib/pruning) to a builder (None: dense)."""

from collections.abc import Callable

import torch
import torch.nn as nn

from lib.pruning import METHODS, PruningSettings
from lib.pruning.pruner import MovementPruner, Pruner, prunable_parameters
from lib.pruning.scores import ADAMWPRUNE_VARIANTS, magnitude_score


def _schedule(s: PruningSettings, total_iters: int) -> dict:
    return dict(
        target=s.target_sparsity,
        warmup=s.warmup_steps,
        frequency=s.frequency,
        ramp_end=s.ramp_end(total_iters),
        ramp=s.ramp,
        global_threshold=s.global_threshold,
    )


def _params(model: nn.Module, s: PruningSettings) -> list:
    return prunable_parameters(
        model, include_embeddings=s.include_embeddings, include_vectors=s.include_vectors
    )


def build_magnitude(model, optimizer, s: PruningSettings, total_iters: int) -> Pruner:
    return Pruner(
        _params(model, s), magnitude_score, optimizer, needs_state=False, **_schedule(s, total_iters)
    )


def build_movement(model, optimizer, s: PruningSettings, total_iters: int) -> Pruner:
    return MovementPruner(_params(model, s), optimizer, **_schedule(s, total_iters))


def build_state(model, optimizer, s: PruningSettings, total_iters: int) -> Pruner:
    """AdamWPrune's state pruning: its variant's score over the optimizer's own moments."""
    v = ADAMWPRUNE_VARIANTS[s.adamwprune_variant]
    return Pruner(
        _params(model, s), v.score, optimizer, needs_state=v.needs_state, **_schedule(s, total_iters)
    )


PRUNERS: dict[str, Callable[..., Pruner | None] | None] = {
    "none": None,
    "magnitude": build_magnitude,
    "movement": build_movement,
    "state": build_state,
}


def build_pruner(
    model: nn.Module, optimizer: torch.optim.Optimizer, s: PruningSettings, total_iters: int
) -> Pruner | None:
    """The pruner named by `s.method` (None for dense training)."""
    builder = PRUNERS[s.method]
    return None if builder is None else builder(model, optimizer, s, total_iters)


if tuple(PRUNERS) != METHODS:
    raise ImportError("lib/pruning/build.py: PRUNERS must build exactly lib/pruning's METHODS")
