"""Checkpoints: one file per run, written atomically, read without executing anything."""

from pathlib import Path

import torch

from lib.errors import Refusal
from lib.io import atomic_write

CHECKPOINT_FILE = "ckpt.pt"
BEST_FILE = "best.pt"
"""Model weights at the lowest validation loss so far (not for resuming: no optimizer state)."""


class CheckpointError(Refusal, RuntimeError):
    """A checkpoint that cannot be read; the message says what to do."""


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save `state` to `path` through a temp file: a crash leaves the old checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: Path, required: tuple[str, ...] = ("iter_num", "model", "optimizer", "settings")
) -> dict:
    """Load a checkpoint onto the CPU with weights_only=True (tensors and plain data only).

    `required` are the keys it must hold: a resumable one by default; ("model", "settings")
    for best.pt or an export.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        # torch's own message would suggest weights_only=False, which runs code from the file: never.
        raise CheckpointError(
            f"{path} is not a readable checkpoint (torch.load refused it: {type(e).__name__}). It may be "
            "truncated or from another program; start a new run, or restore a copy of the file."
        ) from None
    missing = set(required) - set(state)
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(sorted(missing))}; it is not from gpt2/train.py")
    return state
