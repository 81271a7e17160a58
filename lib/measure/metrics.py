"""Throughput, MFU and memory figures, and the per-run metrics.jsonl stream."""

import json
import os
import resource
import sys
from pathlib import Path

import torch

from lib.io import FILE_MODE, atomic_write_text, write_error

# Dense (not sparsity-doubled) tensor-core peaks in FLOP/s by autocast dtype, from
# vendor datasheets; matched against torch.cuda.get_device_name() substrings.
PEAK_FLOPS = {
    "H200": {torch.bfloat16: 989e12, torch.float16: 989e12, None: 494e12},
    "H100": {torch.bfloat16: 989e12, torch.float16: 989e12, None: 494e12},
    "A100": {torch.bfloat16: 312e12, torch.float16: 312e12, None: 156e12},
    "L4": {torch.bfloat16: 121e12, torch.float16: 121e12, None: 60e12},
    "W7900": {torch.bfloat16: 122e12, torch.float16: 122e12, None: 61e12},
    "MI300X": {torch.bfloat16: 1307e12, torch.float16: 1307e12, None: 654e12},
}


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The device's datasheet peak for `dtype` (None: fp32/TF32), or None when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks[dtype]
    return None


@torch.no_grad()
def model_sparsity(model: torch.nn.Module) -> float:
    """Fraction of all parameters (tied ones once) that are exactly zero (reads the device)."""
    params = list(model.parameters())
    zeros = torch.stack([(p == 0).sum() for p in params]).sum().item()
    return zeros / sum(p.numel() for p in params)


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, params=None) -> int:
    """Bytes of the optimizer's per-parameter state (for `params` only, if given)."""
    keys = optimizer.state.keys() if params is None else params
    return tensor_bytes(
        t for p in keys for t in optimizer.state.get(p, {}).values() if isinstance(t, torch.Tensor)
    )


def bookkeeping(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pruner) -> dict:
    """Measured sparsity and the bytes optimizer and pruner keep, next to the weights they serve."""
    prunable = pruner.weights if pruner is not None else []
    weight_bytes = tensor_bytes(prunable)
    out = {
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "param_bytes": tensor_bytes(model.parameters()),
    }
    if pruner is not None:
        measured = pruner.sparsity()
        out.update(
            sparsity=measured["prunable"],
            prunable_weights=pruner.num_prunable,
            prunable_weight_bytes=weight_bytes,
            prunable_optimizer_state_bytes=optimizer_state_bytes(optimizer, prunable),
            pruning_state_bytes=pruner.state_bytes(),
            mask_bytes=0,
            pruning_state_per_weight_byte=pruner.state_bytes() / weight_bytes,
            training_bytes_per_weight_byte=(
                weight_bytes + optimizer_state_bytes(optimizer, prunable) + pruner.state_bytes()
            )
            / weight_bytes,
        )
    return out


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of the run: allocated GPU memory on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if device.type == "mps":
        return torch.mps.driver_allocated_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class MetricsWriter:
    """Append-only JSON lines, one object per event ({"kind": "train"|"eval", "iter": ...})."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, iter_num: int) -> int:
        """Drop records past `iter_num` (a resumed run redoes those steps), and a line torn by a kill;
        atomically: a death during the rewrite leaves the file as it was, never half of it.
        Returns the last step dropped (iter_num when none was)."""
        if not self.path.is_file():
            return iter_num
        records = read_metrics(self.path)
        keep = [r for r in records if r["iter"] <= iter_num]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return max((r["iter"] for r in records), default=iter_num)

    def write(self, record: dict) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a full disk: said; a torn last line is left out when read
            raise write_error(self.path, e) from None


def read_metrics(path: Path) -> list[dict]:
    """All records of a metrics.jsonl file; a last line torn by a killed run (SIGKILL mid-write) is left out."""
    lines = [line for line in Path(path).read_text().splitlines() if line]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not a JSON record; the file is damaged") from None
    return records
