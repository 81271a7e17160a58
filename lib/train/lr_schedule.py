"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

import math

from lib.train.settings import TrainingSettings


def learning_rate_at(step: int, training: TrainingSettings, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of a `total_steps` run.

    Warm-up rises linearly to `learning_rate` over `lr_warmup_steps`; then, with `decay_lr`, a
    half cosine falls from `learning_rate` to `min_lr` at `total_steps` (Loshchilov & Hutter,
    SGDR, 2017), and stays there.
    """
    learning_rate, min_lr, lr_warmup_steps = training.learning_rate, training.min_lr, training.lr_warmup_steps
    if step < lr_warmup_steps:
        return learning_rate * (step + 1) / (lr_warmup_steps + 1)
    if not training.decay_lr:
        return learning_rate
    if step >= total_steps:
        return min_lr
    progress = (step - lr_warmup_steps) / max(1, total_steps - lr_warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)
