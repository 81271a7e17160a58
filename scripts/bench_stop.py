"""Signal-to-exit: how long a run takes to stop after SIGTERM, in training and in an evaluation.

    python -m scripts.bench_stop --model gpt2 --model gpt2-xl --out stop.json
    python -m scripts.bench_stop --model gpt2 --phase eval --batch-size 8

Each case is a real `python -m gpt2.train` process on config.py's dataset (flags on top): it is
sent SIGTERM once it trains (a few steps after its first evaluation) or once an evaluation has
begun, and timed from the signal to its exit. The run answers with a checkpoint, so the time is the
step (or evaluation batch) in progress plus the checkpoint's write, which the run logs
("checkpoint written: X GB in Y s"). Slurm leaves 30 s (KillWait) between SIGTERM and SIGKILL.
Checkpoints go to a temporary folder on the disk of --work (default: the system's temp folder).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.launch import in_place_env

EVAL_AT = 10  # the evaluation the eval phase interrupts (after step 10)


def read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def one_case(args, model: str, phase: str, work: Path) -> dict:
    run_dir = work / f"{model}-{phase}"
    samples = args.eval_samples if phase == "eval" else 2
    flags = ["--max-iters", "100000", "--eval-interval", str(EVAL_AT), "--log-interval", "1"]
    flags += ["--batch-size", str(args.batch_size), "--gradient-accumulation", "1"]
    flags += ["--model", model, "--set", f"GPT2_EVAL_SAMPLES={samples}"]
    flags += [
        "--set",
        f"GPT2_COMPILE={'y' if args.compile else 'n'}",
        "--set",
        "GPT2_GENERATION_MAX_TOKENS=0",
    ]
    cmd = [sys.executable, "-m", "gpt2.train", "--config", args.config, "--out-dir", str(run_dir), *flags]
    log = open(work / f"{model}-{phase}.console", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=in_place_env())
    started = time.time()
    metrics = run_dir / "metrics.jsonl"

    def ready() -> bool:
        records = read_records(metrics)
        trained = [r["iter"] for r in records if r["kind"] == "train"]
        if phase == "train":
            return bool(trained) and max(trained) >= 3
        evaluated = [r["iter"] for r in records if r["kind"] == "eval"]
        return EVAL_AT in trained and EVAL_AT not in evaluated

    while not ready():
        if proc.poll() is not None or time.time() - started > args.start_timeout:
            proc.kill()
            log.close()
            tail = (work / f"{model}-{phase}.console").read_text(errors="replace")[-1500:]
            return {
                "model": model,
                "phase": phase,
                "error": f"did not reach the {phase} phase",
                "console": tail,
            }
        time.sleep(0.02)
    if phase == "eval":
        time.sleep(args.eval_delay)  # well inside the evaluation
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=args.exit_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    exit_seconds = time.time() - sent
    text = (run_dir / "output.log").read_text() if (run_dir / "output.log").is_file() else ""
    writes = re.findall(r"checkpoint written: ([\d.]+) GB in ([\d.]+) s", text)
    stopped = re.search(r"stopped at iter (\d+)", text)
    records = read_records(metrics)
    return {
        "model": model,
        "phase": phase,
        "returncode": rc,
        "signal_to_exit_seconds": round(exit_seconds, 2),
        "stopped_at_iter": int(stopped.group(1)) if stopped else None,
        "eval_logged_at_stop": any(r["kind"] == "eval" and r["iter"] == EVAL_AT for r in records),
        "last_checkpoint_gb": float(writes[-1][0]) if writes else None,
        "last_checkpoint_write_seconds": float(writes[-1][1]) if writes else None,
        "ms_per_iter": next((r["ms_per_iter"] for r in reversed(records) if "ms_per_iter" in r), None),
        "batch_size": args.batch_size,
        "compiled": args.compile,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="config.py")
    p.add_argument("--model", action="append", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl (repeatable)")
    p.add_argument("--phase", action="append", choices=("train", "eval"), help="default: both")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-samples", type=int, default=400, help="batches of the evaluation interrupted")
    p.add_argument("--eval-delay", type=float, default=1.0, help="seconds into the evaluation to signal")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--start-timeout", type=float, default=400)
    p.add_argument("--exit-timeout", type=float, default=300)
    p.add_argument("--work", help="folder for the runs (default: a temporary one)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(dir=args.work, prefix="bench-stop-") as tmp:
        for model in args.model or ["gpt2"]:
            for phase in args.phase or ["train", "eval"]:
                result = one_case(args, model, phase, Path(tmp))
                print(json.dumps(result), flush=True)
                results.append(result)
                if args.out:
                    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
                for f in Path(tmp).glob("*/*.pt"):  # the next case's disk
                    os.unlink(f)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
