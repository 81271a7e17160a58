"""Token files on disk -> random (input, target) batches on the device.

train.bin / val.bin are flat uint16 arrays of GPT-2 token ids, read window by
window (pread), so that a corpus of any size costs no RAM. A batch is B random
windows of T+1 tokens; the sampling generator's state is part of checkpoints, so
a resumed run draws exactly the batches the uninterrupted one would have.

Damage is an error that says so, never a crash or a silent change: a file whose
sha256 is not meta.json's (checked once per version of the file), a token id
outside GPT-2's vocabulary (checked in every batch), a file cut short while a run
reads it (a short read, where a memory map would die of SIGBUS).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from lib.errors import Refusal
from lib.io import atomic_write_json

META_FILE = "meta.json"
# (size, mtime, inode) of each token file whose sha256 matched meta.json's: hashed again only when
# one of them changes (a file rewritten in place, even to the same size, gets a new mtime).
VERIFIED_FILE = ".verified.json"
TOKEN_DTYPE = np.uint16
VOCAB_SIZE = 50257  # GPT-2 BPE's ids are 0..50256; the model's padded rows above are never data
CUSTOM_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


class DataError(Refusal, RuntimeError):
    """Token files missing, damaged or stale; the message says which command fixes it."""


def custom_files(path: Path) -> list[Path]:
    """The files of a custom corpus: the file itself, or a folder's .txt/.jsonl/.json/.parquet files."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CUSTOM_SUFFIXES)
    else:
        raise DataError(
            f"the custom dataset path {str(path)!r} does not exist (GPT2_CUSTOM_DATASET_PATH, --path)"
        )
    bad = [p for p in files if p.suffix not in CUSTOM_SUFFIXES]
    if bad or not files:
        raise DataError(
            f"{path}: need .txt, .jsonl/.json or .parquet files ({'found ' + bad[0].name if bad else 'found none'})"
        )
    return files


def files_fingerprint(files: list[Path]) -> str:
    """A digest of each file's path, size and modification time: it changes when the corpus does."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def stale_reason(
    meta: dict, dataset: str, custom_path: str, val_fraction: float, cap: int | None
) -> str | None:
    """Why token files prepared as `meta` describes are not what these settings ask for, or None.

    Compared: the dataset, the split fraction, the token cap of capped corpora and, for a custom
    corpus named by a path, that path and its files' fingerprint (so an edited corpus is noticed).
    """
    if meta.get("dataset", dataset) != dataset:
        return f"they hold {meta['dataset']!r}, not {dataset!r}"
    if meta.get("val_fraction") is not None and meta["val_fraction"] != val_fraction:
        return f"they were split with GPT2_VAL_FRACTION={meta['val_fraction']}, not {val_fraction}"
    if meta.get("max_tokens") != cap and (cap is not None or meta.get("max_tokens") is not None):
        return f"they were capped at {meta.get('max_tokens')} tokens, not {cap} (GPT2_DATASET_MAX_TOKENS)"
    if dataset == "custom" and custom_path:
        source = str(Path(custom_path).resolve())
        if meta.get("source") != source:
            return f"they were made from {meta.get('source')!r}, not from GPT2_CUSTOM_DATASET_PATH={source!r}"
        if (
            "source_fingerprint" in meta
            and files_fingerprint(custom_files(Path(custom_path))) != meta["source_fingerprint"]
        ):
            return f"the files under {source} changed since they were prepared"
    return None


def damage(token_dir: Path, meta: dict) -> str | None:
    """Which token file is missing or not the size meta.json promises, or None when both are whole."""
    for split in ("train", "val"):
        path = Path(token_dir) / f"{split}.bin"
        expected = meta.get(f"{split}_tokens")
        if not path.is_file() or path.stat().st_size != 2 * (expected or -1):
            return f"{path} is missing or does not hold the {expected} tokens {META_FILE} promises"
    return None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def altered(token_dir: Path, meta: dict) -> str | None:
    """Which token file's sha256 is not the one meta.json records (changed after it was prepared),
    or None. Each version of a file is hashed once: a match is remembered in .verified.json (when
    the folder can be written) by the file's size, mtime and inode."""
    token_dir = Path(token_dir)
    try:
        verified = json.loads((token_dir / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        verified = {}
    now = {}
    for split in ("train", "val"):
        path, expected = token_dir / f"{split}.bin", meta.get(f"{split}_sha256")
        if expected is None:  # prepared before meta.json held digests, or made by hand
            continue
        now[split] = _identity(path)
        if verified.get(split) == [*now[split], expected]:
            continue
        if sha256_file(path) != expected:
            return (
                f"{path} is not the file that was prepared: its sha256 differs from the one {META_FILE} "
                "records (it was changed or damaged since)"
            )
    if now and verified != (record := {split: [*now[split], meta[f"{split}_sha256"]] for split in now}):
        try:
            atomic_write_json(token_dir / VERIFIED_FILE, record)
        except OSError:
            pass  # a read-only data folder: hashed again next time
    return None


def load_meta(token_dir: Path) -> dict | None:
    """meta.json of a prepared dataset folder, or None when it is not (completely) prepared."""
    path = Path(token_dir) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None  # a damaged meta.json marks an incomplete preparation


def prepare_command(dataset: str, data_dir: str) -> str:
    """The command that (re)prepares `dataset` into `data_dir`; it redoes damaged or stale files by itself."""
    extra = " --path <file-or-folder>" if dataset == "custom" else ""
    return f"make data  (or: python -m gpt2.prepare_data --dataset {dataset}{extra} --data-dir {data_dir})"


class TokenFile:
    """One split's token file, read with pread: a file cut short under a running job is an error
    that says so (a memory map would die of SIGBUS, with no message and no checkpoint)."""

    def __init__(self, path: Path, prepare: str):
        self.path, self.prepare = Path(path), prepare
        self.fd = os.open(self.path, os.O_RDONLY)
        self.tokens = os.fstat(self.fd).st_size // TOKEN_DTYPE().itemsize

    def __len__(self) -> int:
        return self.tokens

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def windows(self, starts: list[int], length: int) -> np.ndarray:
        """The windows of `length` tokens at `starts`, as a (len(starts), length) uint16 array."""
        size = TOKEN_DTYPE().itemsize
        chunks = [os.pread(self.fd, length * size, i * size) for i in starts]
        if any(len(c) != length * size for c in chunks):
            now = os.fstat(self.fd).st_size // size
            raise DataError(
                f"{self.path} holds {now:,} tokens, not the {self.tokens:,} it held when the run opened it: "
                f"it was cut short while the run read it. Prepare it again ({self.prepare}), then resume "
                "the run from its last checkpoint"
            )
        out = np.frombuffer(b"".join(chunks), dtype=TOKEN_DTYPE).reshape(len(starts), length)
        if out.size and (top := int(out.max())) >= VOCAB_SIZE:
            row, col = divmod(int(out.argmax()), length)
            raise DataError(
                f"{self.path} holds token id {top} (at token {starts[row] + col:,}), outside GPT-2's "
                f"vocabulary of {VOCAB_SIZE}: the file is damaged or was not made by GPT-2 BPE. Prepare it "
                f"again ({self.prepare}), then resume the run from its last checkpoint"
            )
        return out


class TokenData:
    """The train and val splits of one prepared dataset, sampled as random windows.

    `check` (the data settings' dataset, custom path, split fraction and token cap) refuses
    token files prepared from another corpus or with other settings.
    """

    def __init__(self, token_dir: Path, dataset: str, data_dir: str, seed: int, check: dict | None = None):
        self.dir = Path(token_dir)
        self.meta = load_meta(self.dir)
        if self.meta is None:
            raise DataError(
                f"no prepared {dataset!r} data in {self.dir} (no {META_FILE}). "
                f"Prepare it with: {prepare_command(dataset, data_dir)}"
            )
        if (why := damage(self.dir, self.meta) or altered(self.dir, self.meta)) is not None:
            raise DataError(f"{why}. Prepare it again: {prepare_command(dataset, data_dir)}")
        if check is not None and (why := stale_reason(self.meta, dataset, **check)) is not None:
            raise DataError(
                f"the token files in {self.dir} are not the ones these settings ask for: {why}. "
                f"Prepare them again: {prepare_command(dataset, data_dir)}"
            )
        self.prepare = prepare_command(dataset, data_dir)
        self.splits = {s: TokenFile(self.dir / f"{s}.bin", self.prepare) for s in ("train", "val")}
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
        windows = self.splits[split].windows(starts.tolist(), block_size + 1)
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
