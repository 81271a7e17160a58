"""When to prune and how much: a ramp from 0 to the target sparsity.

Shared by every pruning method. Masks are updated every `frequency` steps from
`warmup` until `ramp_end`, when the target is reached; after that they stay fixed.
"""

from collections.abc import Callable

# Ramp shapes over progress p in [0, 1] (the fraction of the ramp done), scaled by the target.
RAMPS: dict[str, Callable[[float], float]] = {
    # Zhu & Gupta, "To prune, or not to prune" (2017): fast early, gentle near the target.
    "cubic": lambda p: 1.0 - (1.0 - p) ** 3,
    # The seed project's s * p^3: gentle early, fast near the end.
    "seed": lambda p: p**3,
    "linear": lambda p: p,
}


def sparsity_at(step: int, *, target: float, warmup: int, ramp_end: int, ramp: str) -> float:
    """Target fraction of prunable weights that are zero after optimizer step `step`."""
    if step <= warmup:
        return 0.0
    progress = min(1.0, (step - warmup) / (ramp_end - warmup))
    return target * RAMPS[ramp](progress)


def is_update_step(step: int, *, warmup: int, frequency: int, ramp_end: int) -> bool:
    """Masks are recomputed every `frequency` steps after warm-up, and exactly at ramp_end."""
    return step == ramp_end or (warmup < step < ramp_end and (step - warmup) % frequency == 0)
