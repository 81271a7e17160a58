"""Memory pre-flight: estimate a run's peak GPU memory before it starts, and host RAM.

The peak comes at the end of a micro-batch's forward pass, when every
activation is alive; the estimate adds up what is held then on one GPU:

  weights, 16-bit copies  4 + 2 bytes per parameter (fp32 masters, autocast's bf16 copies)
  optimizer states        8 bytes per parameter (Adam's two moments; SPAM and AdamWPrune alike)
  gradients               4 bytes per parameter, only with gradient accumulation (with one
                          micro-batch they are freed before the next forward)
  pruning state           movement's bf16 scores: 2 bytes per prunable weight; others none
  DDP buckets             4 bytes per parameter with more than one process
  activations             layers x tokens x n_embd x A bytes
  logits                  tokens x vocab x G bytes

A and G depend on how the model runs (compiled or eager, activation
checkpointing) and were fitted to torch.cuda.max_memory_allocated of real
training steps on an H100 (scripts/bench_memory.py). Fitted on gpt2 and
gpt2-medium alone, the compiled estimate predicts gpt2-large and gpt2-xl within
1.3%; eager with checkpointing is fitted on all four sizes near their largest
batches, within 1.2% (docs/benchmarks.md has the tables).
"""

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2.model import GPT, GPTConfig
from lib.errors import OutOfMemory
from lib.pruning import STATE_BYTES_PER_WEIGHT
from lib.runtime.distributed import Dist
from lib.train.checkpoint import CHECKPOINT_FILE
from lib.train.settings import Settings

log = logging.getLogger(__name__)

# (A, G) by (compiled, activation checkpointing): activation bytes per token per layer in units of
# n_embd, and logits bytes per token per vocabulary entry. Inductor never keeps the fp32 logits
# (G ~ 2); eager keeps bf16 logits, their fp32 softmax and its gradient (G ~ 10).
FACTORS = {
    (True, False): (37.2, 2.0),
    (False, False): (36.6, 10.1),
    (True, True): (4.8, 1.9),
    (False, True): (3.37, 10.25),
}
# The fused loss keeps one 4096-token chunk: fp32 logits turned into probabilities, and their
# 16-bit gradient.
FUSED_CHUNK_TOKENS, FUSED_BYTES_PER_LOGIT = 4096, 6
GIB = 2**30
# Reciprocal attention keeps scores, their mix and the softmax (16-bit) for backward: not fitted.
RA_BYTES_PER_SCORE = 6


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes per GPU, by part."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        items = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.parts.items() if v)
        return f"{self.total / GIB:.2f} GiB ({items})"


def parameter_counts(s: Settings) -> tuple[int, int]:
    """(parameters, prunable weights) of the configured model, counted without allocating it."""
    from lib.pruning.pruner import prunable_parameters

    with torch.device("meta"):
        model = GPT(GPTConfig.from_settings(s.model))
    p = s.pruning
    prunable = prunable_parameters(
        model, include_embeddings=p.include_embeddings, include_vectors=p.include_vectors
    )
    return model.num_params(), sum(w.numel() for _, w in prunable)


def estimate(
    s: Settings,
    *,
    batch_size: int | None = None,
    world_size: int = 1,
    compiled: bool | None = None,
    amp: bool | None = None,
) -> MemoryEstimate:
    """Peak GPU bytes of one training process of `s` (micro-batch `batch_size`, default the configured)."""
    cfg = GPTConfig.from_settings(s.model)
    n, prunable = parameter_counts(s)
    b = s.training.batch_size if batch_size is None else batch_size
    tokens = b * cfg.block_size
    compiled = s.runtime.compile if compiled is None else compiled
    amp = s.runtime.mixed_precision if amp is None else amp
    act, per_logit = FACTORS[(compiled, cfg.activation_checkpointing)]
    activations = cfg.n_layer * tokens * cfg.n_embd * act
    if cfg.fused_loss:
        logits = min(tokens, FUSED_CHUNK_TOKENS) * cfg.vocab_size * FUSED_BYTES_PER_LOGIT
    else:
        logits = tokens * cfg.vocab_size * per_logit
    if cfg.ra_mla and cfg.ra_mla_ra_alpha > 0:  # explicit T x T scores, mixed, softmax and grads
        activations += cfg.n_layer * b * cfg.n_head * cfg.block_size**2 * RA_BYTES_PER_SCORE
    if not amp:  # fp32 activations and logits: twice the 16-bit bytes
        activations, logits = 2 * activations, 2 * logits
    return MemoryEstimate(
        {
            "weights": 4 * n,
            "gradients": 4 * n if s.training.gradient_accumulation > 1 else 0,
            "optimizer": 8 * n,
            "pruning": STATE_BYTES_PER_WEIGHT.get(s.pruning.method, 0) * prunable,
            "weight_copies": 2 * n if amp else 0,
            "ddp_buckets": 4 * n if world_size > 1 else 0,
            "activations": int(activations),
            "logits": int(logits),
        }
    )


def largest_batch(s: Settings, capacity: int, **kwargs) -> int:
    """The largest micro-batch whose estimate fits in `capacity` bytes (0 if none does)."""
    lo, hi = 0, 1
    while estimate(s, batch_size=hi, **kwargs).total <= capacity and hi < 1 << 16:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(s, batch_size=mid, **kwargs).total <= capacity else (lo, mid)
    return lo


def fit_advice(s: Settings, capacity: int, world_size: int = 1) -> list[str]:
    """Ways to make `s` fit in `capacity` bytes, best first, each with the values to set."""
    t = s.training
    global_batch = t.batch_size * t.gradient_accumulation
    tips = []
    b = largest_batch(s, capacity, world_size=world_size)
    if b:
        accumulation = math.ceil(global_batch / b / world_size) * world_size
        tips.append(
            f"a smaller micro-batch with more accumulation: --batch-size {b} --gradient-accumulation "
            f"{accumulation} (BATCH_SIZE, GPT2_GRADIENT_ACCUMULATION)"
        )
    for symbol, flag, path in (
        ("GPT2_FUSED_LOSS", "--fused-loss", "model.fused_loss"),
        ("GPT2_ACTIVATION_CHECKPOINTING", "--activation-checkpointing", "model.activation_checkpointing"),
    ):
        if not getattr(s.model, path.split(".")[1]):
            other = s.replace({path: True})
            if estimate(other, world_size=world_size).total <= capacity:
                tips.append(f"{symbol}=y ({flag}) keeps the batch and fits")
            elif largest_batch(other, capacity, world_size=world_size) > b:
                tips.append(
                    f"{symbol}=y ({flag}) fits up to --batch-size {largest_batch(other, capacity, world_size=world_size)}"
                )
    if not b:
        tips.append("a smaller model (GPT2_MODEL_NAME): the weights and optimizer states alone do not fit")
    return tips


def usable_gpu_bytes(device: torch.device) -> int:
    """95% of the GPU's memory: the CUDA context and allocator slack take the rest."""
    return int(0.95 * torch.cuda.get_device_properties(device).total_memory)


def check_gpu_fits(s: Settings, device: torch.device, world_size: int = 1) -> MemoryEstimate:
    """Raise MemoryError with advice when the estimate exceeds the GPU's memory; return it otherwise."""
    est = estimate(
        s,
        world_size=world_size,
        compiled=s.runtime.compile and device.type == "cuda",
        amp=s.runtime.mixed_precision and device.type != "cpu",
    )
    if device.type == "cpu":
        return check_host_fits(s, est, world_size)
    if device.type != "cuda":
        return est
    usable = usable_gpu_bytes(device)
    if est.total > usable:
        tips = "\n  - ".join(fit_advice(s, usable, world_size))
        raise OutOfMemory(
            f"this run needs about {est.describe()} per GPU, more than the {usable / GIB:.1f} GiB usable "
            f"on {torch.cuda.get_device_name(device)}. To fit:\n  - {tips}\n"
            "(The estimate is gpt2/memory.py's; if you know better, skip it with --no-memory-check.)"
        )
    return est


def available_host_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_fits(s: Settings, est: MemoryEstimate, world_size: int) -> MemoryEstimate:
    """On the CPU the run's memory is the host's: refuse one whose processes on this host would need
    more than it has available (MemAvailable), rather than swap until the kernel's OOM killer ends it."""
    available = available_host_bytes()
    procs = min(world_size, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    if available is None or est.total * procs <= available:
        return est
    as_run = s.replace({"runtime.compile": False, "runtime.mixed_precision": False})  # as the CPU runs it
    tips = "\n  - ".join(fit_advice(as_run, available // procs, world_size))
    raise OutOfMemory(
        f"this run needs about {est.describe()} per process on the CPU"
        f"{f' ({procs} processes)' if procs > 1 else ''}, more than the {available / GIB:.1f} GiB of host "
        f"memory available. To fit:\n  - {tips}\n"
        "(The estimate is gpt2/memory.py's; if you know better, skip it with --no-memory-check.)"
    )


def host_bytes_needed(s: Settings, checkpoint_bytes: int = 0, processes: int = 1) -> int:
    """Host RAM to build the model (fp32 on the CPU first), plus a checkpoint being loaded, per host."""
    n, _ = parameter_counts(s)
    return processes * (4 * n + checkpoint_bytes + 2 * GIB)  # + the torch runtime itself


def host_ram_warning(needed: int) -> str | None:
    """A warning when this host has less RAM available than `needed` (the seeds' system lock-ups)."""
    available = available_host_bytes()
    if available is None or needed <= available:
        return None
    return (
        f"loading needs about {needed / GIB:.1f} GiB of host RAM but only {available / GIB:.1f} GiB is "
        "available: the system may swap or lock up. Close other programs, use a smaller model, or fewer "
        "processes per host."
    )


def preflight(s: Settings, device: torch.device, dist: Dist, resume_dir: Path | None) -> dict | None:
    """Refuse a run that will not fit on the GPU (GPT2_MEMORY_CHECK), warn when host RAM is short, and
    return the estimate summary.json records (None with the check off)."""
    if not s.runtime.memory_check:
        return None
    checkpoint_bytes = (resume_dir / CHECKPOINT_FILE).stat().st_size if resume_dir is not None else 0
    procs = min(dist.world_size, int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    warning = host_ram_warning(host_bytes_needed(s, checkpoint_bytes, procs))
    if warning and dist.local_rank == 0:
        log.warning("warning: %s", warning)
    est = check_gpu_fits(s, device, dist.world_size)
    log.info("memory estimate: %s per %s", est.describe(), "GPU" if device.type == "cuda" else "process")
    return {"estimated_peak_bytes": est.total, "estimate_parts": est.parts}
