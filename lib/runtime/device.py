"""Device, precision and seeding: the run's execution environment."""

import contextlib
import ctypes
import ctypes.util
import os
import random
import sys

import numpy as np
import torch

from lib.errors import Refusal
from lib.runtime.options import ATTENTION_BACKENDS, SDPA_KERNELS

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA/ROCm GPU, else MPS, else CPU; explicit names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Refusal(
            f"DEVICE={name!r} but PyTorch sees no CUDA/ROCm GPU (torch {torch.__version__}). "
            "Use --device cpu, or install a GPU build of PyTorch."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise Refusal(f"DEVICE={name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise Refusal(f"DEVICE={name!r} but MPS is not available on this machine")
    return device


def amp_dtype(device: torch.device, mixed_precision: bool, name: str) -> torch.dtype | None:
    """The autocast dtype for this device, or None for plain fp32 (always on CPU)."""
    if not mixed_precision or device.type == "cpu":
        return None
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise Refusal("GPT2_AMP_DTYPE=bfloat16 but this GPU has no bf16 support; use float16 (--dtype fp16)")
    return AMP_DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """An autocast context for `dtype`, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_expandable_segments() -> None:
    """Let CUDA's caching allocator grow segments instead of carving fixed ones (unless the user chose).

    With fixed segments the large, differently sized activation and logits blocks of
    big batches fragment the cache: on an H100, GPT-2 124M at 160 x 1024 tokens ran
    out of memory with 68.6 GiB in use of 79.6; with expandable segments it trains
    (docs/benchmarks.md). Call before the first CUDA allocation; a PYTORCH_CUDA_ALLOC_CONF
    already in the environment is kept as it is.
    """
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def keep_freed_memory() -> bool:
    """Stop glibc from unmapping large freed blocks (returns True if applied).

    By default every tensor over 32 MiB (a 16 x 128 x 50304 fp32 logits tensor is
    400 MB) is mmap'ed on allocation and unmapped on free, so each training step
    page-faults and zeroes it afresh: on 2 CPU cores that doubled the step time
    (1455 -> 796 ms, docs/benchmarks.md). Raising the thresholds keeps freed
    memory in the heap for reuse.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def select_attention_backend(name: str) -> None:
    """Leave only GPT2_ATTENTION_BACKEND's fused attention kernel enabled ('auto': all of them).

    The math kernel stays on as the fallback for inputs the chosen kernel does not take
    (e.g. on the CPU), so a choice never makes a run fail where 'auto' would not.
    """
    chosen = ATTENTION_BACKENDS[name]
    for kernel in SDPA_KERNELS:
        on = chosen is None or kernel in (chosen, "math")
        getattr(torch.backends.cuda, f"enable_{kernel}_sdp")(on)


def compile_model(model: torch.nn.Module, device: torch.device, enabled: bool, mode: str) -> torch.nn.Module:
    """torch.compile(model) with GPT2_COMPILE_MODE on CUDA when enabled; the model itself otherwise."""
    if not enabled or device.type != "cuda":
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


def configure(device: torch.device, tf32: bool, seed: int, attention_backend: str = "auto") -> None:
    """Seed every generator, set the matmul precision policy and attention kernel, tune the CPU allocator."""
    select_attention_backend(attention_backend)
    if device.type == "cpu":
        keep_freed_memory()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def rng_state(device: torch.device) -> dict:
    """Generator states that dropout and sampling consume (for exact resume)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(device: torch.device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def overflow_flag(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """GradScaler's verdict on this step, after scaler.unscale_(optimizer): a device tensor,
    nonzero when a gradient overflowed and scaler.step will skip the update; None when fp16
    loss scaling is off. The very flag the scaler decides with (no host sync)."""
    if not scaler.is_enabled():
        return None
    return sum(scaler._found_inf_per_device(optimizer).values())


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (only at logging points: it stalls the pipeline)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def compilations() -> int:
    """Frames torch.compile has compiled in this process so far, recompilations included.

    A host-side counter (no device sync): a logged interval in which it moved spent part of
    its time compiling, so its ms/iter is not the training speed.
    """
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]
