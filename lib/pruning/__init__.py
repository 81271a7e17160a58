"""Pruning: which weights are zeroed, when, and how they are chosen.

This module is plain data (no torch): the settings, the methods (METHODS, the lower-cased
Kconfig choice names) and which optimizers each pairs with. lib/pruning/build.py maps each
method to a builder that returns a Pruner, or None for dense training; state pruning is
AdamWPrune's and built with it (lib/adamwprune/build.py). Every method shares the
schedule, the exact threshold and the zero-keeping of lib/pruning/pruner.py; they differ in the
score (lib/pruning/scores.py).
"""

from dataclasses import dataclass, field

from lib.errors import Refusal
from lib.fields import check, kc
from lib.pruning.schedule import RAMPS


class PruningError(Refusal, RuntimeError):
    """Pruning cannot proceed as configured; the message says why and what to change."""


# Which optimizers each method may pair with: state pruning is AdamWPrune's own.
PAIRINGS = {
    "none": ("adamw", "adamwspam"),
    "magnitude": ("adamw", "adamwspam"),
    "movement": ("adamw", "adamwspam"),
    "state": ("adamwprune",),
}
# The methods, by the lower-cased Kconfig choice name.
METHODS = tuple(PAIRINGS)
# Bytes of pruning state each method keeps per prunable weight (the memory model reads this):
# movement its bf16 scores; magnitude and state pruning keep none (the mask is w != 0).
STATE_BYTES_PER_WEIGHT = {"movement": 2}

RAMP_END_AUTO_FRACTION = 0.75


@dataclass(frozen=True, kw_only=True, slots=True)
class PruningSettings:
    """The pruning method of a run and its schedule."""

    method: str = field(default="none", metadata=kc("PRUNING_METHOD", "--pruning-method"))
    """One of METHODS."""
    target_sparsity: float = field(default=0.5, metadata=kc("TARGET_SPARSITY", "--target-sparsity"))
    """Fraction of prunable weights that are zero at the end of the ramp."""
    pruning_warmup: int = field(default=1000, metadata=kc("PRUNING_WARMUP", "--pruning-warmup"))
    """Steps of dense training before the first mask update."""
    frequency: int = field(default=100, metadata=kc("PRUNING_FREQUENCY"))
    """Optimizer steps between mask updates during the ramp."""
    ramp_end_step: int = field(default=0, metadata=kc("PRUNING_RAMP_END"))
    """Step at which the target is reached; 0 = 75% of the run."""
    ramp: str = field(default="cubic", metadata=kc("PRUNING_RAMP"))
    """How the target sparsity is approached: a key of lib/pruning/schedule.py's RAMPS."""
    global_threshold: bool = field(default=True, metadata=kc("PRUNING_GLOBAL"))
    """Rank all prunable weights together (layers end at different sparsities), else each layer to the target."""
    include_embeddings: bool = field(default=False, metadata=kc("PRUNING_INCLUDE_EMBEDDINGS"))
    """Prune the token embedding too (tied to the output head)."""
    include_vectors: bool = field(default=False, metadata=kc("PRUNING_INCLUDE_VECTORS"))
    """Prune 1-D parameters too (biases, LayerNorm gains); for experiments only."""

    def __post_init__(self) -> None:
        check(self, "method", self.method in METHODS, f"one of {', '.join(METHODS)}")
        check(self, "target_sparsity", 0.0 < self.target_sparsity < 1.0, "a number in (0, 1)")
        check(self, "pruning_warmup", self.pruning_warmup >= 0, "0 or more")
        check(self, "frequency", self.frequency >= 1, "1 or more")
        check(self, "ramp_end_step", self.ramp_end_step >= 0, "0 (75% of the run) or a step")
        check(self, "ramp", self.ramp in RAMPS, f"one of {', '.join(RAMPS)}")

    def ramp_end(self, total_iters: int) -> int:
        """The step at which the target is reached, checked against warm-up and run length."""
        end = self.ramp_end_step or round(RAMP_END_AUTO_FRACTION * total_iters)
        if not self.pruning_warmup < end <= total_iters:
            raise PruningError(
                f"pruning ramp ends at step {end}, which must lie after PRUNING_WARMUP = "
                f"{self.pruning_warmup} and within the run's {total_iters} steps; lower PRUNING_WARMUP "
                "(--pruning-warmup), set PRUNING_RAMP_END, or train longer"
            )
        return end
