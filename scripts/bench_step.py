"""Time the optimizer step and the pruning mask update for a GPT-2 size on one device.

    python scripts/bench_step.py --model gpt2 --device cuda

Prints, per optimizer, the median time of one optimizer step over all GPT-2
parameters (real gradients from one backward pass, reused), and per pruning
method the median time of one mask update (score, exact global threshold,
apply) over all prunable weights. Medians of CUDA-event-timed repeats after
warm-up; each row is measured in this same process beside the fused AdamW row.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from gpt2.model import GPT, GPTConfig  # noqa: E402
from lib.optim import OptimizerSettings, build_optimizer  # noqa: E402
from lib.optim.spam import spam_prestep_  # noqa: E402
from lib.pruning import PruningSettings, build_pruner  # noqa: E402


def timed(fn, device, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() over `repeats` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            import time

            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def check_prestep(model: torch.nn.Module, device: torch.device) -> None:
    """The compiled SPAM pre-step against eager on the same random inputs (relative max error)."""
    if device.type != "cuda":
        return
    params = list(model.parameters())
    g = [torch.randn_like(p) * 3 for p in params]
    m = [torch.randn_like(p) for p in params]
    v = [torch.rand_like(p) * (torch.rand_like(p) > 0.05) for p in params]
    scale = torch.tensor(0.5, device=device), torch.tensor(0.9, device=device)
    eager = [[t.clone() for t in x] for x in (g, m, v)]
    spam_prestep_(*eager, 50.0, *scale)
    compiled = [[t.clone() for t in x] for x in (g, m, v)]
    torch.compile(spam_prestep_, dynamic=False)(*compiled, 50.0, *scale)
    err = max(
        ((a - b).abs().max() / b.abs().max()).item()
        for xs, ys in zip(compiled, eager, strict=True)
        for a, b in zip(xs, ys, strict=True)
    )
    print(f"compiled vs eager SPAM pre-step: max relative error {err:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gpt2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(args.model)).to(device)
    idx = torch.randint(0, 50257, (4, 256), device=device)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        _, loss = model(idx, idx)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]

    print(
        f"{args.model} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}"
    )
    print(f"{'optimizer step':<34} {'ms':>8} {'x adamw':>8}")
    base = None
    for label in ("adamw", "adamwspam", "adamwspam (eager pre-step)", "adamwprune"):
        name = label.split()[0]
        opt = build_optimizer(model, OptimizerSettings(name=name), lr=1e-4)
        if "eager" in label:
            opt._prestep = spam_prestep_

        def step(opt=opt):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g
            opt.step()

        ms = timed(step, device, args.repeats)
        base = base or ms
        print(f"{label:<34} {ms:8.2f} {ms / base:8.3f}")
    check_prestep(model, device)

    print(f"{'mask update (score+threshold+apply)':<34} {'ms':>8}")
    for method, optimizer, variant in (
        ("magnitude", "adamw", "bitter0"),
        ("movement", "adamw", "bitter0"),
        ("state", "adamwprune", "bitter0"),
    ):
        opt = build_optimizer(model, OptimizerSettings(name=optimizer), lr=1e-4)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
        opt.step()
        pruner = build_pruner(
            model, opt, PruningSettings(method=method, warmup_steps=0), variant, total_iters=100
        )
        ms = timed(lambda pruner=pruner: pruner.prune_to(0.5), device, args.repeats)
        label = f"{method}" + (f" ({variant})" if method == "state" else "")
        print(f"{label:<34} {ms:8.2f}   ({pruner.num_prunable / 1e6:.1f}M prunable weights)")


if __name__ == "__main__":
    main()
