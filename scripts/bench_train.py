"""Whole training iterations, side by side: a nanoGPT-style baseline, HF GPT-2, and this project.

    python -m scripts.bench_train                        # GPT-2 124M, 32 x 1024, bf16, on the GPU
    python -m scripts.bench_train --device cpu --model gpt2-tiny --block-size 64 --batch-size 4
    python -m scripts.bench_train --only baseline,adamw,adamw-fused-loss --json out.json

Every configuration runs in this one process on the same device and the same
token batches: warm-up steps first (compilation happens there and is not
timed), then --windows timed windows of --steps iterations each, synchronised
at the window edges only. An iteration is forward + backward over
--accumulation micro-batches, gradient clipping and the optimizer step.

  baseline   GPT-2 written the way most users have it (nanoGPT style): SDPA
             attention, tied head, vocab 50304, fused torch AdamW, bf16
             autocast, torch.compile. Defined in this file, on purpose apart
             from gpt2/model.py.
  hf         transformers' GPT2LMHeadModel (sdpa attention, compiled, bf16),
             when transformers is installed (it is not a project dependency).
  the rest   this project's own step (lib/train/loop.py's Trainer._step) with the
             optimizer/pruner/model options each name says.

Prints a table (ms/iter, tokens/s, MFU, peak memory, ratio to the baseline)
and writes it as JSON with --json.
"""

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.model import GPT, SIZES, GPTConfig
from lib.adamwprune.build import build_optimizer, build_pruner
from lib.convert.fp8 import convert_to_fp8
from lib.io import atomic_write_json
from lib.measure.gpu_monitor import GPU_FILE, GPUMonitor, nvml_sampler
from lib.measure.metrics import peak_flops
from lib.runtime.device import (
    autocast,
    compilations,
    compile_model,
    resolve_device,
    select_attention_backend,
    synchronize,
    use_expandable_segments,
)
from lib.train.data import META_FILE, TOKEN_DTYPE, TokenData
from lib.train.loop import Trainer
from lib.train.settings import Settings

# This project's configurations: settings overrides on top of the common shape.
PROJECT = {
    "adamw": {},
    "adamw-fused-loss": {"model.fused_loss": True},
    "adamwspam": {"optimizer.name": "adamwspam"},
    "adamw-magnitude": {"pruning.method": "magnitude"},
    "adamwspam-magnitude": {"optimizer.name": "adamwspam", "pruning.method": "magnitude"},
    "adamw-movement": {"pruning.method": "movement"},
    "adamwprune-state": {"optimizer.name": "adamwprune", "pruning.method": "state"},
    "adamw-checkpointing": {"model.activation_checkpointing": True},
    # Speed levers (issue #6), each alone, then together.
    "adamw-cudnn-attention": {"runtime.attention_backend": "cudnn"},
    "adamw-max-autotune": {"runtime.compile_mode": "max-autotune-no-cudagraphs"},
    "adamw-cudagraphs": {"runtime.compile_mode": "max-autotune"},
    "adamw-fp8": {"runtime.fp8": True},
    "adamw-fp8-rowwise": {"runtime.fp8": True, "runtime.fp8_recipe": "rowwise"},
    "adamw-fp8-rowwise-gw-hp": {"runtime.fp8": True, "runtime.fp8_recipe": "rowwise_with_gw_hp"},
    "adamw-fp8-blocks": {"runtime.fp8": True, "runtime.fp8_layers": "blocks"},
    "adamw-fp8-mlp": {"runtime.fp8": True, "runtime.fp8_layers": "mlp"},
    "adamw-fp8-head": {"runtime.fp8": True, "runtime.fp8_layers": "head"},
    "adamw-fp8-cudnn": {"runtime.fp8": True, "runtime.attention_backend": "cudnn"},
    "adamwspam-fp8-cudnn": {
        "optimizer.name": "adamwspam",
        "runtime.fp8": True,
        "runtime.attention_backend": "cudnn",
    },
}
# Not in the default list (minutes of autotuning each): name them with --only.
SLOW = ("adamw-max-autotune", "adamw-cudagraphs")
PEERS = ("baseline", "hf")


# -- the baseline: GPT-2 as most users write it ---------------------------------------------------


class BaselineBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class BaselineGPT(nn.Module):
    def __init__(self, n_layer: int, n_head: int, d: int, block: int, vocab: int = 50304):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.ModuleList(BaselineBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def adamw_like_users(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def peer_step(model, optimizer, data, args, device, amp, loss_fn):
    """One iteration of a plain training loop (the peers)."""
    batches = data.step_batches(args.accumulation, args.batch_size, args.block_size, device, 0, 1)
    for x, y in batches:
        with autocast(device, amp):
            loss = loss_fn(model, x, y) / len(batches)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build_peer(name: str, args, device):
    n_layer, n_head, d = SIZES[args.model]
    if name == "baseline":
        model = BaselineGPT(n_layer, n_head, d, args.block_size).to(device)
        return model, lambda m, x, y: m(x, y)
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50304,
        n_positions=args.block_size,
        n_embd=d,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device)
    return model, lambda m, x, y: m(input_ids=x, labels=x).loss


# -- measuring --------------------------------------------------------------------------------------


def synthetic_data(folder: Path, tokens: int, seed: int) -> None:
    """Random GPT-2 token ids in the prepared-dataset layout (throughput does not depend on text)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", tokens), ("val", tokens // 10)):
        rng.integers(0, 50257, n, dtype=np.int64).astype(TOKEN_DTYPE).tofile(folder / f"{split}.bin")
    (folder / META_FILE).write_text(json.dumps({"train_tokens": tokens, "val_tokens": tokens // 10}))


def measure(step, args, device, work: Path) -> dict:
    """Median ms/iter over the timed windows, after the warm-up; peak memory of the timed part;
    and, where NVML can tell, the GPU's mean SM clock and power over the timed windows: an H100
    near its power cap runs the same kernels up to ~5% slower at a lower clock, so rows measured
    at different clocks differ by that much whatever their code.

    A window in which torch.compile compiled (a recompilation after the warm-up, such as SPAM's
    clipping starting after its grace steps) is not timed: another window replaces it, up to
    three more, and `compiled_windows` counts those left out."""
    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = nvml_sampler(device) if device.type == "cuda" else None
    work.mkdir(parents=True, exist_ok=True)
    monitor = GPUMonitor(work / GPU_FILE, sampler, CLOCK_SAMPLE_SECONDS, "nvml").start()
    windows, compiled = [], 0
    while len(windows) < args.windows and compiled <= 3:
        before, start = compilations(), time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        if compilations() != before:
            compiled += 1
        else:
            windows.append(1000 * (time.perf_counter() - start) / args.steps)
    gpu = monitor.stop() or {}
    if not windows:
        raise RuntimeError(f"every timed window compiled ({compiled}): raise --warmup")
    ms = statistics.median(windows)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "ms_per_iter": ms,
        "window_ms": windows,
        "compiled_windows": compiled,
        "peak_memory_bytes": peak,
        "sm_clock_mhz": gpu.get("mean_sm_clock_mhz"),
        "power_watts": gpu.get("mean_power_watts"),
    }


CLOCK_SAMPLE_SECONDS = 0.25

# Kernel-name patterns -> where the time of an iteration goes (first match wins).
KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("matmul", ("gemm", "sm90", "sm80", "xmma", "cutlass", "nvjet", "matmul", "scaled_mm", "wgmma")),
    ("loss", ("nll", "log_softmax", "cross_entropy", "softmax")),
    ("embedding", ("embedding", "index", "scatter", "gather")),
    ("fused (triton)", ("triton",)),
    ("copy", ("memcpy", "memset", "copy", "fill")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile(step, name: str, folder: Path, device: torch.device, steps: int = 3) -> dict:
    """GPU time per kind of kernel over `steps` iterations (torch.profiler); full table to a file."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    folder.mkdir(parents=True, exist_ok=True)
    synchronize(device)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kinds: dict[str, float] = {}
    for e in events:
        kinds[kernel_kind(e.key)] = kinds.get(kernel_kind(e.key), 0.0) + e.self_device_time_total / 1000
    total = sum(kinds.values())
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=90)
    lines = [f"{name}: GPU kernel time per iteration, {total / steps:.2f} ms in all"]
    lines += [
        f"  {k:<16} {ms / steps:8.2f} ms  {100 * ms / total:5.1f}%"
        for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1])
    ]
    (folder / f"profile_{name}.txt").write_text("\n".join(lines) + "\n\n" + table)
    print("\n".join(lines), flush=True)
    return {k: ms / steps for k, ms in kinds.items()}


def settings_for(name: str, args) -> Settings:
    base = {
        "model.name": args.model,
        "model.block_size": args.block_size,
        "training.batch_size": args.batch_size,
        "training.gradient_accumulation": args.accumulation,
        "training.max_iters": 10_000,
        "runtime.compile": args.compile,
        "optimizer.name": "adamw",  # the settings' default is adamwspam; names say which runs
        # Pruning mid-ramp: masks live from the start, one mask update in every timed window
        # (five times the default rate of one per 100 steps: an upper bound on the cost).
        "pruning.pruning_warmup": 0,
        "pruning.frequency": args.prune_every or args.steps,
    }
    return Settings().replace({**base, **PROJECT[name]})


def run_one(name: str, args, device, amp, data, work: Path) -> dict:
    torch.manual_seed(0)
    if name in PEERS:
        model, loss_fn = build_peer(name, args, device)
        optimizer = adamw_like_users(model, 6e-4, device)
        compiled = torch.compile(model) if args.compile else model

        def step():
            peer_step(compiled, optimizer, data, args, device, amp, loss_fn)

        flops = GPT(GPTConfig.from_settings(settings_for("adamw", args).model)).flops_per_token()
    else:
        s = settings_for(name, args)
        select_attention_backend(s.runtime.attention_backend)
        model = GPT(GPTConfig.from_settings(s.model)).to(device)
        if s.runtime.fp8:
            convert_to_fp8(model, s.runtime.fp8_recipe, device, s.runtime.fp8_layers)
        optimizer = build_optimizer(
            model, s.optimizer, s.adamwprune, s.training.learning_rate, compile=args.compile
        )
        pruner = build_pruner(model, optimizer, s.pruning, s.adamwprune, 10_000)
        compiled = compile_model(model, device, args.compile, s.runtime.compile_mode)
        trainer = Trainer(s, work / name, device, model, compiled, optimizer, data, amp, pruner)
        if pruner is not None:
            pruner.prune_to(0.3)  # masks are live from the first step

        def step():
            trainer._step(s.training.learning_rate)
            trainer.state.iter_num += 1

        flops = model.flops_per_token()
    result = measure(step, args, device, work / name)
    if args.profile:
        result["profile"] = profile(step, name, Path(args.profile), device)
    tokens = args.batch_size * args.accumulation * args.block_size
    tok_s = 1000 * tokens / result["ms_per_iter"]
    peak = peak_flops(device, amp)
    result.update(
        name=name,
        tokens_per_sec=tok_s,
        mfu=None if peak is None else flops * tok_s / peak,
    )
    return result


def release(device: torch.device) -> None:
    """Free the last configuration's model, states and compiled graphs."""
    gc.collect()
    torch._dynamo.reset()
    select_attention_backend("auto")
    if device.type == "cuda":
        torch.cuda.empty_cache()


def table(rows: list[dict]) -> str:
    base = next((r["ms_per_iter"] for r in rows if r["name"] == "baseline"), None)
    lines = [
        f"{'configuration':<22} {'ms/iter':>9} {'tokens/s':>11} {'MFU':>7} {'peak GiB':>9} {'vs baseline':>12}"
        f" {'SM MHz':>7} {'W':>5}",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<22} {r['error']}")
            continue
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mem = "" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f}"
        ratio = "" if base is None else f"{base / r['ms_per_iter']:.3f}x"
        clock = "" if r.get("sm_clock_mhz") is None else f"{r['sm_clock_mhz']:.0f}"
        watts = "" if r.get("power_watts") is None else f"{r['power_watts']:.0f}"
        lines.append(
            f"{r['name']:<22} {r['ms_per_iter']:>9.1f} {r['tokens_per_sec']:>11,.0f} {mfu:>7} {mem:>9} {ratio:>12}"
            f" {clock:>7} {watts:>5}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    use_expandable_segments()  # as gpt2/train.py does
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="gpt2", choices=list(SIZES))
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--warmup", type=int, default=15, help="untimed iterations first (compilation)")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="iterations per timed window")
    p.add_argument("--prune-every", type=int, help="steps between mask updates (default: --steps)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join([*PEERS, *PROJECT])}")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--strict", action="store_true", help="stop at the first configuration that fails")
    p.add_argument("--profile", metavar="DIR", help="also profile 3 iterations of each; tables to DIR")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    args.compile = device.type == "cuda" if args.compile is None else args.compile
    amp = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    names = args.only.split(",") if args.only else [*PEERS, *(n for n in PROJECT if n not in SLOW)]
    unknown = [n for n in names if n not in PEERS and n not in PROJECT]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        need = (args.warmup + args.windows * args.steps) * args.batch_size * args.accumulation
        synthetic_data(work, max(need * (args.block_size + 1), 10 * args.block_size), seed=0)
        data = TokenData(work, "synthetic", tmp, seed=0)
        for name in names:
            print(f"measuring {name} ...", flush=True)
            try:
                rows.append(run_one(name, args, device, amp, data, work))
            except ImportError as e:
                rows.append({"name": name, "error": f"skipped: {e}"})
            except torch.OutOfMemoryError:
                rows.append({"name": name, "error": "out of memory"})
            except Exception as e:  # one configuration that breaks must not cost the others
                if args.strict:
                    raise
                rows.append({"name": name, "error": f"failed: {type(e).__name__}: {str(e)[:300]}"})
            release(device)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    header = (
        f"{args.model}, {args.batch_size} x {args.accumulation} x {args.block_size} tokens/iter, "
        f"{'bf16' if amp else 'fp32'}, {'compiled' if args.compile else 'eager'}, {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", torch {torch.__version__}"
    )
    print(header)
    print(table(rows))
    if args.json:
        atomic_write_json(Path(args.json), {"setup": header, "args": vars(args), "rows": rows})
    return 0 if all("error" not in r or r["error"].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
