"""One run over several processes: torch.distributed as torchrun sets it up, DDP for gradients.

    torchrun --standalone --nproc_per_node=2 -m gpt2.train     # or GPT2_NPROC_PER_NODE=2 and make

torchrun exports RANK, LOCAL_RANK and WORLD_SIZE; without them a run is one
process and every helper here is a no-op. GPUs talk over NCCL, CPU processes
over gloo (the test suite runs two CPU ranks). Rank 0 is the one that logs,
writes checkpoints and records; all ranks compute.
"""

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from lib.errors import Refusal
from lib.fields import SettingsError
from lib.runtime.device import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        """The torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE), or a single process."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise Refusal(f"malformed torchrun environment (RANK/LOCAL_RANK/WORLD_SIZE): {e}") from None
        if not 0 <= rank < world:
            raise Refusal(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank=rank, local_rank=local, world_size=world)


def check_world(accumulation: int, dist: Dist) -> None:
    """The step's micro-batches (GPT2_GRADIENT_ACCUMULATION) must share out evenly over the ranks."""
    if accumulation % dist.world_size:
        raise SettingsError(
            f"GPT2_GRADIENT_ACCUMULATION={accumulation} does not divide over {dist.world_size} processes: "
            "each step's micro-batches are shared out over the ranks, so the global batch stays "
            f"batch x accumulation x block. Use a multiple of {dist.world_size} "
            f"(--gradient-accumulation {dist.world_size * max(1, accumulation // dist.world_size)}) "
            "or fewer processes."
        )


def world_warning(want: int, dist: Dist) -> str | None:
    """A run started with fewer or more processes than GPT2_NPROC_PER_NODE (`want`) asks for."""
    if want == dist.world_size:
        return None
    return (
        f"GPT2_NPROC_PER_NODE is {want} but this run has {dist.world_size} process(es): start it with "
        f"`make` or `python -m scripts.launch` (torchrun) to use {want}"
    )


def start(dist: Dist, device_name: str, timeout_minutes: float = 30) -> torch.device:
    """Join the process group (when there is one) and return this rank's device.

    With several ranks, 'auto' and 'cuda' mean the GPU numbered LOCAL_RANK; a run on
    CPUs uses gloo. An explicit cuda:N is refused: torchrun assigns the GPUs.
    """
    if not dist.enabled:
        return resolve_device(device_name)
    if device_name.startswith("cuda:"):
        raise Refusal(
            f"DEVICE={device_name!r} under torchrun: each rank takes the GPU numbered by its "
            "LOCAL_RANK. Set DEVICE to auto or cuda (choose GPUs with CUDA_VISIBLE_DEVICES)."
        )
    device = resolve_device(device_name)
    if device.type == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise Refusal(
                f"LOCAL_RANK {dist.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "lower --nproc_per_node (GPT2_NPROC_PER_NODE)"
            )
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise Refusal(f"multi-process runs need CUDA GPUs or the CPU, not {device.type}")
    tdist.init_process_group(
        backend,
        rank=dist.rank,
        world_size=dist.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        device_id=device if device.type == "cuda" else None,
    )
    return device


def stop(dist: Dist) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast(dist: Dist, obj):
    """Rank 0's `obj` on every rank (any picklable value; not on the hot path)."""
    if not dist.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather(dist: Dist, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.enabled:
        return [obj]
    out = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def all_reduce(dist: Dist, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place: the sum (or 'max', 'avg') of `tensor` over the ranks."""
    if dist.enabled:
        ops = {"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "avg": tdist.ReduceOp.SUM}
        tdist.all_reduce(tensor, op=ops[op])
        if op == "avg":
            tensor /= dist.world_size
    return tensor


def any_rank(dist: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any (a collective: every rank must call it)."""
    if not dist.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    return bool(all_reduce(dist, t, "max").item())


def wrap_ddp(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The model under DistributedDataParallel (gradients averaged over ranks), or itself."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # No buffer changes during training: skip the per-forward buffer broadcast (renamed in torch 2.13).
    params = inspect.signature(DistributedDataParallel).parameters
    buffers = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **buffers
    )


def no_sync(module: torch.nn.Module) -> contextlib.AbstractContextManager:
    """DDP's no_sync (skip the gradient all-reduce on a non-final micro-step), or nothing."""
    return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()


class ReplicasDiverged(RuntimeError):
    """Ranks hold different weights or masks: a bug, never expected."""


@torch.no_grad()
def check_replicas(dist: Dist, tensors: list[torch.Tensor]) -> None:
    """Raise unless every rank holds the same `tensors` (compares a per-tensor fingerprint).

    The fingerprint is each tensor's fp64 sum and zero count: different pruning
    masks or weights change it. Called at evaluation, not on every step.
    """
    if not dist.enabled:
        return
    mine = torch.stack([torch.stack([t.double().sum(), (t == 0).sum().double()]) for t in tensors])
    prints = gather(dist, mine.cpu())
    for rank, other in enumerate(prints):
        if not torch.equal(other, prints[0]):
            bad = (other != prints[0]).any(dim=1).nonzero().flatten().tolist()
            raise ReplicasDiverged(
                f"rank {rank} differs from rank 0 in {len(bad)} tensor(s) (first indices {bad[:5]}); "
                "the weights or pruning masks are no longer replicated"
            )
