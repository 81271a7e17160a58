"""Peak GPU memory: gpt2/memory.py's estimate against a measured training step, and what fits.

    python -m scripts.bench_memory --probe gpt2:16 --probe gpt2-xl:4 --compile
    python -m scripts.bench_memory --fit gpt2,gpt2-medium,gpt2-large,gpt2-xl --checkpointing both

A probe MODEL:BATCH[:BLOCK] builds the model with this project's AdamW, runs
three real training steps (lib/train/loop.py's step, bf16 autocast) and reads
torch.cuda.max_memory_allocated: the number the pre-flight estimate predicts.
--fit searches each model's largest micro-batch: it starts from the estimate's
answer and probes up or down (eager mode, so each probe takes seconds).
On the CPU the estimate is printed and nothing is measured.
"""

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpt2.memory import GIB, estimate, largest_batch
from gpt2.model import GPT, SIZES, GPTConfig
from lib.adamwprune.build import build_optimizer
from lib.io import atomic_write_json
from lib.runtime.device import resolve_device, use_expandable_segments
from lib.train.data import TokenData
from lib.train.loop import Trainer
from lib.train.settings import Settings
from scripts.bench_train import synthetic_data

STEPS = 3


def settings_for(model: str, batch: int, block: int, args, checkpointing: bool) -> Settings:
    return Settings().replace(
        {
            "model.name": model,
            "model.block_size": block,
            "model.activation_checkpointing": checkpointing,
            "model.fused_loss": args.fused_loss,
            "training.batch_size": batch,
            "training.max_iters": 100,
            "runtime.compile": args.compile,
        }
    )


def measure(s: Settings, device: torch.device, data: TokenData, work: Path) -> int | None:
    """Peak allocated bytes over STEPS training steps; None when it does not fit."""
    gc.collect()
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.device(device):  # initialised in place: seconds, not minutes, for gpt2-xl
            model = GPT(GPTConfig.from_settings(s.model))
        optimizer = build_optimizer(
            model, s.optimizer, s.adamwprune, s.training.learning_rate, compile=s.runtime.compile
        )
        compiled = torch.compile(model) if s.runtime.compile else model
        trainer = Trainer(s, work, device, model, compiled, optimizer, data, torch.bfloat16)
        for _ in range(STEPS):
            trainer._step(s.training.learning_rate)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    except torch.OutOfMemoryError:
        return None
    finally:
        model = optimizer = compiled = trainer = None  # noqa: F841 (release before the next probe)
        gc.collect()
        torch.cuda.empty_cache()


def probe(model: str, batch: int, block: int, args, checkpointing: bool, device, data, work) -> dict:
    s = settings_for(model, batch, block, args, checkpointing)
    est = estimate(s, compiled=args.compile)
    start = time.perf_counter()
    measured = measure(s, device, data, work) if device.type == "cuda" else None
    row = {
        "model": model,
        "batch_size": batch,
        "block_size": block,
        "compiled": args.compile,
        "activation_checkpointing": checkpointing,
        "fused_loss": args.fused_loss,
        "estimate_bytes": est.total,
        "estimate_parts": est.parts,
        "measured_bytes": measured,
        "fits": measured is not None if device.type == "cuda" else None,
        "seconds": time.perf_counter() - start,
    }
    if measured:
        row["estimate_error"] = est.total / measured - 1
    print(line(row), flush=True)
    return row


def line(r: dict) -> str:
    measured = "n/a" if r["measured_bytes"] is None else f"{r['measured_bytes'] / GIB:7.2f}"
    if r["fits"] is False:
        measured = "    OOM"
    err = f"{100 * r['estimate_error']:+6.1f}%" if "estimate_error" in r else ""
    mode = ("compiled" if r["compiled"] else "eager") + (" +ckpt" if r["activation_checkpointing"] else "")
    return (
        f"{r['model']:<12} {mode:<16} batch {r['batch_size']:>4} x {r['block_size']}: "
        f"estimate {r['estimate_bytes'] / GIB:7.2f} GiB, measured {measured} GiB {err}"
    )


def fit(model: str, block: int, args, checkpointing: bool, device, data, work) -> dict:
    """The largest micro-batch that trains, starting from the estimate's answer."""
    capacity = torch.cuda.get_device_properties(device).total_memory
    s = settings_for(model, 1, block, args, checkpointing)
    guess = max(1, largest_batch(s, capacity, compiled=args.compile))
    tried: dict[int, bool] = {}

    def fits(b: int) -> bool:
        if b not in tried:
            tried[b] = probe(model, b, block, args, checkpointing, device, data, work)["fits"]
        return tried[b]

    lo, hi = (guess, None) if fits(guess) else (0, guess)
    step = max(1, guess // 8)
    while hi is None:  # grow until a probe fails
        b = (lo + step) if lo else 1
        lo, hi = (b, None) if fits(b) else (lo, b)
        step *= 2
    while hi - lo > max(1, lo // 16):  # bisect to within ~6%
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {
        "model": model,
        "activation_checkpointing": checkpointing,
        "compiled": args.compile,
        "largest_batch": lo,
        "first_failing": hi,
        "estimate_largest_batch": guess,
        "probes": tried,
    }


def main(argv: list[str] | None = None) -> int:
    use_expandable_segments()  # as gpt2/train.py does
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--probe", action="append", default=[], metavar="MODEL:BATCH[:BLOCK]")
    p.add_argument("--fit", help="comma-separated model sizes: search the largest batch")
    p.add_argument("--block-size", type=int, default=1024, help="for --fit")
    p.add_argument("--checkpointing", choices=("off", "on", "both"), default="off")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    rows, fits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic_data(work, 4_000_000, seed=0)
        data = TokenData(work, "synthetic", tmp, seed=0)
        for spec in args.probe:
            model, batch, *rest = spec.split(":")
            if model not in SIZES:
                p.error(f"unknown model {model!r} in --probe {spec}")
            for ckpt in modes:
                rows.append(
                    probe(model, int(batch), int(rest[0]) if rest else 1024, args, ckpt, device, data, work)
                )
        if args.fit:
            if device.type != "cuda":
                p.error("--fit needs a CUDA GPU")
            for model in args.fit.split(","):
                for ckpt in modes:
                    fits.append(fit(model, args.block_size, args, ckpt, device, data, work))
                    f = fits[-1]
                    print(
                        f"FIT {model} ckpt={ckpt}: largest batch {f['largest_batch']} "
                        f"(estimate {f['estimate_largest_batch']}, fails at {f['first_failing']})",
                        flush=True,
                    )
    if args.json:
        setup = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        setup["torch"] = torch.__version__
        atomic_write_json(Path(args.json), {"setup": setup, "rows": rows, "fits": fits})
    return 0


if __name__ == "__main__":
    sys.exit(main())
