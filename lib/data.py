"""Token files on disk -> random (input, target) batches on the device.

train.bin / val.bin are flat uint16 arrays of GPT-2 token ids, memory-mapped so
that a corpus of any size costs no RAM. A batch is B random windows of T+1
tokens; the sampling generator's state is part of checkpoints, so a resumed
run draws exactly the batches the uninterrupted one would have.
"""

import json
from pathlib import Path

import numpy as np
import torch

META_FILE = "meta.json"
TOKEN_DTYPE = np.uint16


class DataError(RuntimeError):
    """Token files missing or inconsistent; the message says which command fixes it."""


def load_meta(token_dir: Path) -> dict | None:
    """meta.json of a prepared dataset folder, or None when it is not (completely) prepared."""
    path = Path(token_dir) / META_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def prepare_command(dataset: str, data_dir: str) -> str:
    """The command that prepares `dataset` into `data_dir`."""
    extra = " --path <file-or-folder>" if dataset == "custom" else ""
    return f"make data  (or: python gpt2/prepare_data.py --dataset {dataset}{extra} --data-dir {data_dir})"


class TokenData:
    """The train and val splits of one prepared dataset, sampled as random windows."""

    def __init__(self, token_dir: Path, dataset: str, data_dir: str, seed: int):
        self.dir = Path(token_dir)
        self.meta = load_meta(self.dir)
        if self.meta is None:
            raise DataError(
                f"no prepared {dataset!r} data in {self.dir} (no {META_FILE}). "
                f"Prepare it with: {prepare_command(dataset, data_dir)}"
            )
        self.splits: dict[str, np.memmap] = {}
        for split in ("train", "val"):
            path = self.dir / f"{split}.bin"
            expected = self.meta.get(f"{split}_tokens")
            if not path.is_file() or path.stat().st_size != 2 * (expected or -1):
                raise DataError(
                    f"{path} is missing or does not hold the {expected} tokens {META_FILE} "
                    f"promises. Prepare again: {prepare_command(dataset, data_dir)} --force"
                )
            self.splits[split] = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
        self.generator = torch.Generator().manual_seed(seed)

    def num_tokens(self, split: str) -> int:
        return len(self.splits[split])

    def check_block_size(self, block_size: int) -> None:
        """Every split must hold more than one window of block_size + 1 tokens."""
        for split, arr in self.splits.items():
            if len(arr) <= block_size + 1:
                raise DataError(
                    f"{self.dir}/{split}.bin holds {len(arr)} tokens, fewer than one window of "
                    f"GPT2_BLOCK_SIZE + 1 = {block_size + 1}. Lower the block size or use more text."
                )

    def batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y of shape (batch_size, block_size): y is x shifted by one token.

        Windows start at random offsets drawn from `generator` (default: the training one).
        """
        gen = self.generator if generator is None else generator
        return self.windows(split, self.starts(split, batch_size, block_size, gen), block_size, device)

    def step_batches(
        self, accumulation: int, batch_size: int, block_size: int, device: torch.device, rank: int, world: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of one optimizer step.

        Every rank draws the offsets of the whole step (accumulation x batch_size
        windows) from the same generator and reads its own share of micro-batches,
        so the step sees the same tokens on any number of ranks and the generators
        stay in step for resume.
        """
        per_rank = accumulation // world
        starts = self.starts("train", accumulation * batch_size, block_size, self.generator)
        mine = starts.view(accumulation, batch_size)[rank * per_rank : (rank + 1) * per_rank]
        return [self.windows("train", row, block_size, device) for row in mine]

    def starts(self, split: str, n: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.splits[split]) - block_size - 1, (n,), generator=generator)

    def windows(
        self, split: str, starts: torch.Tensor, block_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        arr = self.splits[split]
        windows = np.stack([arr[i : i + block_size + 1] for i in starts.tolist()])
        tokens = torch.from_numpy(windows.astype(np.int64))
        if device.type == "cuda":
            # Pinned host memory lets the copy overlap with the previous step's compute.
            tokens = tokens.pin_memory().to(device, non_blocking=True)
        else:
            tokens = tokens.to(device)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
