"""Automatic batch sizing (GPT2_BATCH_MODE=auto): the largest micro-batch that fits, for a fixed effective batch.

The effective batch GPT2_TARGET_BATCH = micro-batch x accumulation, and the
accumulation must share out evenly over the processes. Candidates are the
divisors of the target that allow that, largest first; the first whose memory
estimate (gpt2/memory.py) fits the GPU is confirmed by one real forward and
backward pass (`probe`), falling to the next candidate if that runs out of
memory. Everything depends only on the settings and the GPU, so the choice is
the same on every rank and every time.
"""

import logging
from collections.abc import Callable

import torch

from gpt2.memory import GIB, estimate, usable_gpu_bytes
from lib.errors import OutOfMemory
from lib.train.settings import Settings, SettingsError

log = logging.getLogger("train")

CPU_MAX_MICRO_BATCH = 16
# Settings the automatic mode chooses; a user value for them would be overridden, so it is refused.
CHOSEN = ("training.batch_size", "training.gradient_accumulation")


def candidates(target: int, world_size: int) -> list[int]:
    """Micro-batches b, largest first, with target = b x accumulation and accumulation % world_size == 0."""
    return [b for b in range(target, 0, -1) if target % b == 0 and (target // b) % world_size == 0]


def refuse_manual_values(overrides: dict) -> None:
    """In auto mode, a batch size or accumulation given by hand is an error, never silently replaced."""
    given = [p for p in CHOSEN if p in overrides]
    if given:
        raise SettingsError(
            f"{', '.join(given)} given, but GPT2_BATCH_MODE is auto, which chooses them for "
            "GPT2_TARGET_BATCH; set --target-batch instead, or --batch-mode manual"
        )


def choose_batch(
    s: Settings,
    device: torch.device,
    world_size: int = 1,
    probe: Callable[[int, int], bool] | None = None,
) -> tuple[Settings, dict]:
    """Settings with batch_size and gradient_accumulation chosen for target_batch, and a record.

    probe(batch, accumulation) runs one real pass on the device and says whether it
    fitted; without it (or off CUDA) the estimate decides alone.
    """
    target = s.training.target_batch
    options = candidates(target, world_size)
    record: dict = {"mode": "auto", "target_batch": target, "world_size": world_size, "probes": []}
    chosen = None
    if device.type != "cuda":
        chosen = next(b for b in options if b <= CPU_MAX_MICRO_BATCH)
        record["rule"] = f"largest divisor up to {CPU_MAX_MICRO_BATCH} (no GPU memory to fit)"
    else:
        usable = usable_gpu_bytes(device)
        record.update(rule="largest that the estimate fits and one pass confirms", usable_bytes=usable)
        for b in options:
            trial = s.replace({"training.batch_size": b, "training.gradient_accumulation": target // b})
            est = estimate(trial, world_size=world_size, compiled=s.runtime.compile).total
            if est > usable:
                continue
            fits = True if probe is None else probe(b, target // b)
            record["probes"].append({"batch_size": b, "estimate_bytes": est, "fits": fits})
            if fits:
                chosen = b
                break
        if chosen is None:
            raise OutOfMemory(
                f"not even a micro-batch of 1 fits in {usable / GIB:.1f} GiB for GPT2_TARGET_BATCH={target}; "
                "use activation checkpointing (--activation-checkpointing) or a smaller model"
            )
    record.update(batch_size=chosen, gradient_accumulation=target // chosen)
    log.info(
        "batch sizing: GPT2_TARGET_BATCH %d = micro-batch %d x accumulation %d (%s)",
        *(target, chosen, target // chosen, record["rule"]),
    )
    return s.replace(
        {"training.batch_size": chosen, "training.gradient_accumulation": target // chosen}
    ), record


def make_probe(
    train_model: torch.nn.Module, model: torch.nn.Module, device: torch.device, amp, block_size: int, dist
) -> Callable[[int, int], bool]:
    """probe(batch, accumulation): one forward and backward of `batch` random sequences on the GPU.

    It fits if the peak it reached plus what training adds later (Adam's two moments,
    and the gradients kept between micro-batches when accumulating) stays within the
    usable memory. The gradients are dropped and the random generators restored, so
    training starts as it would have without the probe; ranks agree on the answer.
    """
    from lib.runtime.device import autocast, rng_state, set_rng_state
    from lib.runtime.distributed import any_rank, no_sync

    params = list(model.parameters())
    n = sum(p.numel() for p in params)

    def probe(batch: int, accumulation: int) -> bool:
        saved = rng_state(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fits, x, y, loss = True, None, None, None
        try:
            # Distinct inputs and targets, as in training: the same tensor for both would be
            # another guard for torch.compile, and training would compile again.
            x = torch.randint(0, 50257, (batch, block_size), device=device)
            y = torch.randint(0, 50257, (batch, block_size), device=device)
            with no_sync(train_model):
                with autocast(device, amp):
                    _, loss = train_model(x, y)
                loss.backward()
            later = 8 * n + (4 * n if accumulation > 1 else 0)
            fits = torch.cuda.max_memory_allocated(device) + later <= usable_gpu_bytes(device)
        except torch.OutOfMemoryError:
            fits = False
        finally:
            x = y = loss = None
            for p in params:
                p.grad = None
            set_rng_state(device, saved)
            torch.cuda.empty_cache()
        fits = not any_rank(dist, not fits, device)
        if not fits and train_model is not model:
            torch._dynamo.reset()  # compile afresh for the next size, not a dynamic-shape graph
        return fits

    return probe


def resumed_batch(s: Settings, saved: dict) -> tuple[Settings, dict]:
    """A resumed auto-sized run keeps the micro-batch and accumulation it started with."""
    t = saved["training"]
    record = {"mode": "auto", "target_batch": t["target_batch"], "resumed": True}
    record.update(batch_size=t["batch_size"], gradient_accumulation=t["gradient_accumulation"])
    values = {
        "training.batch_size": t["batch_size"],
        "training.gradient_accumulation": t["gradient_accumulation"],
    }
    return s.replace(values), record
