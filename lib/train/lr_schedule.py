"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

import math


def lr_at(
    step: int, *, peak: float, min_lr: float, warmup_steps: int, total_steps: int, decay: bool
) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly to `peak` over `warmup_steps`; then, with `decay`, a
    half cosine falls from `peak` to `min_lr` at `total_steps` (Loshchilov &
    Hutter, SGDR, 2017), and stays there.
    """
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    if not decay:
        return peak
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - min_lr)
