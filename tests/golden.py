"""Golden numbers: fixed-seed CPU runs of a tiny GPT-2 for every optimizer x pruning method x variant x base.

Each combination trains through gpt2/train.py for a few dozen steps on real Shakespeare
tokens, with a schedule short enough that every mechanism acts: the pruning ramp updates
its masks three times, SPAM clips, detects spikes and resets its moments twice (with the
warm-up after each reset), and bitter2 runs its 21% more steps. What is pinned per run:
every logged training loss, the evaluations' losses, the measured sparsity and a hash of
the final mask (which weights are zero).

    python -m tests.golden --update     # rewrite tests/golden.json (say why in the commit)
    python -m tests.golden              # compare, and print what moved

A change that should not alter numerics must leave this file untouched; one that does must
regenerate it and explain why (tests/test_golden.py fails until then).

The numbers are computed under one fixed numerical environment (PINNED_ENV: MKL's SSE2
reproducibility branch, ATen's AVX2 kernels, one thread), so that any x86-64 CPU with AVX2
repeats them bit for bit, whatever its vendor: the mask is chaotic (one ulp anywhere moves a
weight across the pruning threshold), and MKL and ATen otherwise pick their kernels by CPU
(an AMD EPYC and the machine that first pinned these numbers disagreed on every mask). `main()`
starts itself again under that environment when it is not already in it. Where the environment
still does not repeat the pinning machine's arithmetic (`same_numerics`), masks are compared on a
fixed sample of positions and losses at a looser tolerance (`differences(..., exact=False)`).
"""

import argparse
import base64
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np  # torch, never at import: main() must set PINNED_ENV before it loads

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_FILE = ROOT / "tests" / "golden.json"
# Logged losses agree to this relative tolerance (a CPU run repeats bit for bit; the slack is for
# another CPU's kernels); masks and sparsity must match exactly.
LOSS_RTOL = 1e-4
# Where the machine's numerics are not the pinning machine's (its dense AdamW run is not bit for
# bit the pinned one), one ulp flips a few mask bits and the losses after it drift: the masks are
# then compared on a fixed sample of positions and the losses at a looser tolerance. A mutated
# score moves far more of the sample than this (test_golden.py checks that it does).
SAMPLE_SIZE = 4096
SAMPLE_TOL = 0.02
LOSS_RTOL_ELSEWHERE = 0.02
# Set before torch is imported (main() re-executes itself with them): MKL's reproducible SSE2
# branch (the same on Intel and AMD), ATen's AVX2 kernels (Sleef, not the CPU's libm) and
# oneDNN capped to AVX2, one thread, no dynamic thread count.
PINNED_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
}

# The combinations: (optimizer, pruning method, AdamWPrune variant, AdamWPrune base).
COMBINATIONS = [
    *[
        (opt, method, None, None)
        for opt in ("adamw", "adamwspam")
        for method in ("none", "magnitude", "movement")
    ],
    *[
        ("adamwprune", "state", variant, base)
        for base in ("adamw", "adamwspam")
        for variant in ("bitter0", "bitter1", "bitter2")
    ],
]

# A 4-layer GPT-2 on 4 x 32-token windows, 24 steps: masks at steps 8, 12 and 16 (50% at 16),
# SPAM resets before steps 11 and 21 with a 4-step warm-up, clipping after a 3-step grace period.
CONFIG = """CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_BATCH_SIZE=4
CONFIG_GPT2_MAX_ITERS=24
CONFIG_LEARNING_RATE="3e-3"
CONFIG_GPT2_WARMUP_STEPS=4
CONFIG_GPT2_MIN_LR="3e-4"
CONFIG_GPT2_EVAL_INTERVAL=12
CONFIG_GPT2_EVAL_SAMPLES=2
CONFIG_GPT2_LOG_INTERVAL=1
CONFIG_GPT2_GENERATION_MAX_TOKENS=0
# CONFIG_GPT2_SAVE_CHECKPOINT is not set
CONFIG_DEVICE="cpu"
CONFIG_GPT2_COMPILE=n
CONFIG_SEED=1234
CONFIG_OPTIMIZER_SELECT_ADAMWSPAM=y
CONFIG_SPAM_THETA="5.0"
CONFIG_SPAM_CLIP_GRACE_STEPS=3
CONFIG_SPAM_SPIKE_THRESHOLD="1.0"
CONFIG_SPAM_INTERVAL=10
CONFIG_SPAM_WARMUP_STEPS=4
CONFIG_PRUNING_MODE_SINGLE=y
CONFIG_PRUNING_WARMUP=4
CONFIG_PRUNING_FREQUENCY=4
CONFIG_PRUNING_RAMP_END=16
"""


def key(optimizer: str, method: str, variant: str | None, base: str | None) -> str:
    return "/".join(x for x in (optimizer, base, variant, method) if x)


def flags(optimizer: str, method: str, variant: str | None, base: str | None) -> list[str]:
    out = ["--optimizer", optimizer, "--pruning-method", method]
    if variant is not None:
        out += ["--adamwprune-variant", variant, "--adamwprune-base", base]
    return out


def mask_digest(model, names: list[str]) -> str:
    """sha256 over the zero pattern of the named weights, in order."""
    h = hashlib.sha256()
    params = dict(model.named_parameters())
    for name in names:
        h.update(name.encode())
        h.update((params[name].detach() == 0).numpy().tobytes())
    return h.hexdigest()[:16]


def mask_sample(model, names: list[str]) -> str:
    """The zero pattern at SAMPLE_SIZE fixed positions of the named weights (flattened in order),
    packed into bits, base64."""
    import torch

    params = dict(model.named_parameters())
    zeros = torch.cat([(params[name].detach() == 0).flatten() for name in names])
    positions = sorted(random.Random(0).sample(range(zeros.numel()), SAMPLE_SIZE))
    bits = zeros[torch.tensor(positions)].numpy()
    return base64.b64encode(np.packbits(bits).tobytes()).decode()


def sample_distance(a: str, b: str) -> float:
    """The fraction of sampled positions where two mask samples differ."""
    x, y = (np.unpackbits(np.frombuffer(base64.b64decode(s), dtype=np.uint8)) for s in (a, b))
    return float((x != y).mean())


def same_numerics(got: dict, want: dict) -> bool:
    """Whether this machine computes as the pinning one did: the dense AdamW run bit for bit."""
    dense = key("adamw", "none", None, None)
    return (
        got[dense]["train_loss"] == want[dense]["train_loss"]
        and got[dense]["val_loss"] == want[dense]["val_loss"]
    )


def platform_problem() -> str | None:
    """Why this machine cannot run in the pinned environment at all (not x86-64, or no AVX2), or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the golden numbers are pinned for x86-64 CPUs with AVX2; this is {platform.machine()}"
    import torch

    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        return "the golden numbers need ATen's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2); this CPU lacks AVX2"
    return None


def run(combination: tuple, data_dir: Path, workdir: Path, extra: tuple[str, ...] = ()) -> dict:
    """Train one combination (with `extra` flags after its own) and return its pinned numbers."""
    import torch

    from gpt2 import train
    from lib.config.kconfig import apply_config, load_kconfig, write_outputs
    from lib.measure.metrics import read_metrics
    from lib.train.run import Run

    kconf = load_kconfig(ROOT / "Kconfig")
    defconfig = workdir / "defconfig"
    defconfig.write_text(CONFIG + f'CONFIG_DATA_DIR="{data_dir}"\nCONFIG_OUTPUT_DIR="{workdir / "runs"}"\n')
    apply_config(kconf, defconfig)
    write_outputs(kconf, workdir / ".config", workdir / "config.py")
    out = workdir / key(*combination).replace("/", "_")
    captured = {}
    real_finish = Run.finish

    def finish(run_, summary):  # keep the trained model's final zero pattern
        names = [] if run_.trainer.pruner is None else run_.trainer.pruner.names
        captured["mask"] = mask_digest(run_.trainer.model, names) if names else None
        captured["mask_sample"] = mask_sample(run_.trainer.model, names) if names else None
        real_finish(run_, summary)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order whatever the machine's core count
    Run.finish = finish
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = train.main(
                ["--config", str(workdir / "config.py"), "--out-dir", str(out), *flags(*combination), *extra]
            )
    finally:
        Run.finish = real_finish
        torch.set_num_threads(threads)
    if code != 0:
        raise RuntimeError(f"{key(*combination)}: gpt2/train.py exited with {code}; see {out}/output.log")
    records = read_metrics(out / "metrics.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    if summary["adamwprune_base"] != combination[3] or summary["pruning_method"] != combination[1]:
        raise RuntimeError(f"{key(*combination)}: summary.json records another run: {summary}")
    return {
        "train_loss": [r["loss"] for r in records if r["kind"] == "train"],
        "val_loss": [r["val_loss"] for r in records if r["kind"] == "eval"],
        "iters": summary["iters"],
        "sparsity": (
            json.loads((out / "sparsity.json").read_text())["prunable"] if captured["mask"] else None
        ),
        "mask": captured["mask"],
        "mask_sample": captured["mask_sample"],
    }


def differences(got: dict, want: dict, exact: bool = True) -> list[str]:
    """What differs between two runs' pinned numbers (empty: they agree). `exact`: the same numerics
    (mask hash, losses to LOSS_RTOL); else the mask on its sample to SAMPLE_TOL and the losses to
    LOSS_RTOL_ELSEWHERE."""
    out = []
    for field in ("iters", "sparsity", *(("mask",) if exact else ())):
        if got[field] != want[field]:
            out.append(f"{field}: {got[field]} != golden {want[field]}")
    if not exact and (got["mask_sample"] is None) != (want["mask_sample"] is None):
        out.append(f"mask: {got['mask']} != golden {want['mask']}")
    elif not exact and got["mask_sample"] is not None:
        moved = sample_distance(got["mask_sample"], want["mask_sample"])
        if moved > SAMPLE_TOL:
            out.append(f"mask: {moved:.1%} of the sampled positions differ (> {SAMPLE_TOL:.0%})")
    rtol = LOSS_RTOL if exact else LOSS_RTOL_ELSEWHERE
    for field in ("train_loss", "val_loss"):
        a, b = got[field], want[field]
        if len(a) != len(b):
            out.append(f"{field}: {len(a)} values != golden {len(b)}")
            continue
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not math.isclose(x, y, rel_tol=rtol)]
        if bad:
            i = bad[0]
            out.append(f"{field}[{i}]: {a[i]:.6f} != golden {b[i]:.6f} ({len(bad)} of {len(a)} differ)")
    return out


class Reproduction:
    """`python -m tests.golden --json` in a process of its own (its pinned environment must be set
    before torch is imported), started early so it runs beside the rest of the suite."""

    def __init__(self, shakespeare: str | None):
        self.folder = Path(tempfile.mkdtemp(prefix="golden-"))
        self.out = self.folder / "numbers.json"
        cmd = [sys.executable, "-m", "tests.golden", "--json", str(self.out)]
        if shakespeare:
            cmd += ["--shakespeare", shakespeare]
        self.log = open(self.folder / "stderr.txt", "w+")  # noqa: SIM115 (closed in result())
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)

    def result(self) -> tuple[int, dict | None, str]:
        """Exit code, the numbers (None if none were written) and stderr; waits for the process."""
        code = self.proc.wait()
        self.log.seek(0)
        stderr = self.log.read()
        self.log.close()
        numbers = json.loads(self.out.read_text()) if self.out.is_file() else None
        shutil.rmtree(self.folder, ignore_errors=True)
        return code, numbers, stderr


def load_golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update", action="store_true", help=f"rewrite {GOLDEN_FILE.relative_to(ROOT)}")
    p.add_argument("--json", metavar="FILE", help="also write the numbers of this run to FILE")
    p.add_argument(
        "--shakespeare", help="a local Tiny Shakespeare input.txt (else SHAKESPEARE_SOURCE, else downloaded)"
    )
    args = p.parse_args(argv)
    if any(os.environ.get(k) != v for k, v in PINNED_ENV.items()):  # torch is not imported yet
        argv = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, "-m", "tests.golden", *argv], {**os.environ, **PINNED_ENV})
    if (problem := platform_problem()) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from gpt2.prepare_data import prepare

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare("shakespeare", tmp / "data", source=args.shakespeare or os.environ.get("SHAKESPEARE_SOURCE"))
        results = {}
        for combination in COMBINATIONS:
            k = key(*combination)
            (tmp / k.replace("/", "_")).mkdir()
            results[k] = run(combination, tmp / "data", tmp / k.replace("/", "_"))
            print(f"{k}: final loss {results[k]['train_loss'][-1]:.4f}, mask {results[k]['mask']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.update:
        GOLDEN_FILE.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {GOLDEN_FILE}")
        return 0
    golden = load_golden()
    exact = same_numerics(results, golden)
    if not exact:
        print(
            "this machine's numerics are not the pinning machine's: masks compared on a sample, losses to 2%"
        )
    moved = {k: differences(results[k], golden[k], exact) for k in results if k in golden}
    moved = {k: d for k, d in moved.items() if d}
    for k, d in moved.items():
        print(f"{k}: " + "; ".join(d))
    return 1 if moved or golden.keys() != results.keys() else 0


if __name__ == "__main__":
    sys.exit(main())
