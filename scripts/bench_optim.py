"""Time the optimizer step and the pruning mask update for a GPT-2 size on one device.

    python -m scripts.bench_optim --model gpt2 --device cuda

Prints, per optimizer, the median time of one optimizer step over all GPT-2
parameters (real gradients from one backward pass, reused) as seen from the host
(launch overhead included) and as GPU kernel time (what it adds to a training
iteration, where the host runs ahead of the GPU), and per pruning
method the median time of one mask update (score, exact global threshold,
apply) over all prunable weights. Medians of CUDA-event-timed repeats after
warm-up; each row is measured in this same process beside the fused AdamW row.
"""

import argparse
import statistics

import torch

from gpt2.model import GPT, GPTConfig
from lib.adamwprune import AdamWPruneSettings
from lib.adamwprune.build import build_optimizer, build_pruner
from lib.optim import OptimizerSettings
from lib.pruning import PruningSettings
from lib.pruning.pruner import accumulate_movement_, foreach_mask_gradients_


def kernel_ms(fn, device, repeats: int = 5) -> float | None:
    """GPU kernel time of one fn() (torch.profiler, summed over kernels): what the step costs
    inside a training iteration, where the host runs ahead and launch gaps are hidden."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.self_device_time_total for e in kernels) / 1000 / repeats


def top_kernels(fn, device, n: int = 12) -> None:
    """Print the n costliest GPU kernels of one fn(): name, calls, total microseconds."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: -e.self_device_time_total)
    print(f"  {len(kernels)} distinct kernels, {sum(e.count for e in kernels)} launches; costliest:")
    for e in kernels[:n]:
        print(f"  {e.self_device_time_total:9.1f} us {e.count:5d}x  {e.key[:90]}")


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


def check_one_pass(model: torch.nn.Module, device: torch.device) -> None:
    """AdamWSPAM's compiled one-pass step against the eager two-pass one, fresh random inputs.

    Five steps on a copy of the model with random gradients (one a spike), both
    ways; prints the largest difference of any weight relative to its tensor's range.
    """
    if device.type != "cuda":
        return
    import copy

    results = []
    for one_pass in (True, False):
        torch.manual_seed(1)
        m = copy.deepcopy(model)
        spam = OptimizerSettings(name="adamwspam", spam_spike_threshold=0.5)
        opt = build_optimizer(m, spam, AdamWPruneSettings(), learning_rate=1e-3, compile=one_pass)
        opt.one_pass = one_pass
        for step in range(6):
            for p in m.parameters():
                p.grad = torch.randn_like(p) * (10.0 if step == 4 else 1.0)
            opt.observe_grad_norm(
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters()]))
            )
            opt.step()
        results.append([p.detach().clone() for p in m.parameters()])
    err = max(((a - b).abs().max() / (b.abs().max() + 1e-12)).item() for a, b in zip(*results, strict=True))
    print(
        f"AdamWSPAM one pass (compiled) vs pre-step + AdamW (eager), 6 steps: max relative difference {err:.2e}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gpt2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--kernels", action="store_true", help="list the costliest kernels of each step")
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
    print(f"{'optimizer step':<34} {'ms':>8} {'x adamw':>8} {'GPU ms':>8} {'x adamw':>8}")
    base = base_gpu = None
    # The trainer computes the gradient norm for clipping whatever the optimizer, and hands it
    # to AdamWSPAM's spike test (observe_grad_norm); the step alone does not include it.
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    for label in ("adamw", "adamwspam", "adamwspam (pre-step + fused)", "adamwprune"):
        name = label.split()[0]
        opt = build_optimizer(model, OptimizerSettings(name=name), AdamWPruneSettings(), learning_rate=1e-4)
        if "pre-step" in label:
            opt.one_pass = False  # the compiled pre-step, then torch's fused AdamW kernel

        def step(opt=opt):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g
            if hasattr(opt, "observe_grad_norm"):
                opt.observe_grad_norm(grad_norm)
            opt.step()

        ms = timed(step, device, args.repeats)
        gpu = kernel_ms(step, device)
        base = base or ms
        base_gpu = base_gpu or gpu
        gpu_cols = "" if gpu is None else f" {gpu:8.2f} {gpu / base_gpu:8.3f}"
        print(f"{label:<34} {ms:8.2f} {ms / base:8.3f}{gpu_cols}")
        if args.kernels and device.type == "cuda":
            top_kernels(step, device)
    check_one_pass(model, device)

    print(f"{'mask update (score+threshold+apply)':<34} {'ms':>8}")
    pruners = {}
    for method, optimizer, variant in (
        ("magnitude", "adamw", "bitter0"),
        ("movement", "adamw", "bitter0"),
        ("state", "adamwprune", "bitter0"),
    ):
        opt = build_optimizer(
            model, OptimizerSettings(name=optimizer), AdamWPruneSettings(), learning_rate=1e-4
        )
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
        opt.step()
        pruner = build_pruner(
            model,
            opt,
            PruningSettings(method=method, pruning_warmup=0),
            AdamWPruneSettings(variant=variant),
            total_iters=100,
        )
        ms = timed(lambda pruner=pruner: pruner.prune_to(0.5), device, args.repeats)
        label = f"{method}" + (f" ({variant})" if method == "state" else "")
        print(f"{label:<34} {ms:8.2f}   ({pruner.num_prunable / 1e6:.1f}M prunable weights)")
        pruners[method] = pruner
    per_step_work(pruners, device, args.repeats)


def per_step_work(pruners: dict, device: torch.device, repeats: int) -> None:
    """What pruning adds to every step once masks are live (the pruner's before_step),
    beside the multi-tensor eager path it replaced on CUDA, in GPU kernel time."""
    magnitude, movement = pruners["magnitude"], pruners["movement"]
    weights = magnitude.weights
    grads = [w.grad for w in weights]
    scores = (
        torch.compile(accumulate_movement_, dynamic=False) if device.type == "cuda" else accumulate_movement_
    )
    rows = {
        "mask gradients (before_step)": magnitude.before_step,
        "  multi-tensor mask (the eager path)": lambda: foreach_mask_gradients_(grads, weights),
        "movement scores + mask (before_step)": movement.before_step,
        "  scores, then multi-tensor mask": lambda: (
            scores(movement.movement, grads, weights),
            foreach_mask_gradients_(grads, weights),
        ),
    }
    print(f"{'per-step pruning work':<34} {'ms':>8} {'GPU ms':>8}")
    for label, fn in rows.items():
        ms = timed(fn, device, repeats)
        gpu = kernel_ms(fn, device)
        print(f"{label:<38} {ms:8.2f}" + ("" if gpu is None else f" {gpu:8.2f}"))


if __name__ == "__main__":
    main()
