"""Pruning: which weights are zeroed, when, and how they are chosen.

PRUNERS maps a method name (the lower-cased Kconfig choice) to a builder that
returns a Pruner, or None for dense training. Every method shares the schedule,
the exact threshold and the zero-keeping of lib/pruning/pruner.py; they differ
in the score (lib/pruning/scores.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from lib.pruning.pruner import MovementPruner, Pruner, PruningError, prunable_parameters
from lib.pruning.schedule import RAMPS
from lib.pruning.scores import ADAMWPRUNE_VARIANTS, magnitude_score
from lib.validate import check, kc

RAMP_END_AUTO_FRACTION = 0.75


@dataclass(frozen=True, kw_only=True, slots=True)
class PruningSettings:
    """The pruning method of a run and its schedule."""

    method: str = field(default="none", metadata=kc("PRUNING_METHOD", "--pruning-method"))
    """A key of PRUNERS."""
    target_sparsity: float = field(default=0.5, metadata=kc("TARGET_SPARSITY", "--target-sparsity"))
    """Fraction of prunable weights that are zero at the end of the ramp."""
    warmup_steps: int = field(default=1000, metadata=kc("PRUNING_WARMUP", "--pruning-warmup"))
    frequency: int = field(default=100, metadata=kc("PRUNING_FREQUENCY"))
    ramp_end_step: int = field(default=0, metadata=kc("PRUNING_RAMP_END"))
    """Step at which the target is reached; 0 = 75% of the run."""
    ramp: str = field(default="cubic", metadata=kc("PRUNING_RAMP"))
    global_threshold: bool = field(default=True, metadata=kc("PRUNING_GLOBAL"))
    include_embeddings: bool = field(default=False, metadata=kc("PRUNING_INCLUDE_EMBEDDINGS"))
    include_vectors: bool = field(default=False, metadata=kc("PRUNING_INCLUDE_VECTORS"))

    def __post_init__(self) -> None:
        check(self, "method", self.method in PRUNERS, f"one of {', '.join(PRUNERS)}")
        check(self, "target_sparsity", 0.0 < self.target_sparsity < 1.0, "a number in (0, 1)")
        check(self, "warmup_steps", self.warmup_steps >= 0, "0 or more")
        check(self, "frequency", self.frequency >= 1, "1 or more")
        check(self, "ramp_end_step", self.ramp_end_step >= 0, "0 (75% of the run) or a step")
        check(self, "ramp", self.ramp in RAMPS, f"one of {', '.join(RAMPS)}")

    def ramp_end(self, total_iters: int) -> int:
        """The step at which the target is reached, checked against warm-up and run length."""
        end = self.ramp_end_step or round(RAMP_END_AUTO_FRACTION * total_iters)
        if not self.warmup_steps < end <= total_iters:
            raise PruningError(
                f"pruning ramp ends at step {end}, which must lie after PRUNING_WARMUP = "
                f"{self.warmup_steps} and within the run's {total_iters} steps; lower PRUNING_WARMUP "
                "(--pruning-warmup), set PRUNING_RAMP_END, or train longer"
            )
        return end


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


def build_magnitude(model, optimizer, s: PruningSettings, variant: str, total_iters: int) -> Pruner:
    return Pruner(
        _params(model, s), magnitude_score, optimizer, needs_state=False, **_schedule(s, total_iters)
    )


def build_movement(model, optimizer, s: PruningSettings, variant: str, total_iters: int) -> Pruner:
    return MovementPruner(_params(model, s), optimizer, **_schedule(s, total_iters))


def build_state(model, optimizer, s: PruningSettings, variant: str, total_iters: int) -> Pruner:
    """AdamWPrune's state pruning: the variant's score over the optimizer's own moments."""
    v = ADAMWPRUNE_VARIANTS[variant]
    return Pruner(
        _params(model, s), v.score, optimizer, needs_state=v.needs_state, **_schedule(s, total_iters)
    )


PRUNERS: dict[str, Callable[..., Pruner | None] | None] = {
    "none": None,
    "magnitude": build_magnitude,
    "movement": build_movement,
    "state": build_state,
}

# Which optimizers each method may pair with: state pruning is AdamWPrune's own.
PAIRINGS = {
    "none": ("adamw", "adamwspam"),
    "magnitude": ("adamw", "adamwspam"),
    "movement": ("adamw", "adamwspam"),
    "state": ("adamwprune",),
}


def build_pruner(
    model: nn.Module, optimizer: torch.optim.Optimizer, s: PruningSettings, variant: str, total_iters: int
) -> Pruner | None:
    """The pruner named by `s.method` (None for dense training)."""
    builder = PRUNERS[s.method]
    return None if builder is None else builder(model, optimizer, s, variant, total_iters)
