"""Run the test matrix: one gpt2/train.py process per selected combination, then the report.

    python -m scripts.run_test_matrix                 # plan, run what is missing, report
    python -m scripts.run_test_matrix --dry-run       # the plan only
    python -m scripts.run_test_matrix --rerun-failed  # also rerun runs that failed before
    python -m scripts.run_test_matrix --report-only [RESULTS_DIR]
    python -m scripts.run_test_matrix --slurm         # a Slurm job array, one task per run
    python -m scripts.run_test_matrix --sweep defconfigs/gpt2-tiny-cpu.sweep.toml   # a sweep
    python -m scripts.run_test_matrix --stop-after 520  # a chunk: start no run that would end later

Results go to test_matrix_results_<time>/<run-name>/. Running again reuses the
newest results folder made from the same config.py: finished runs are kept,
interrupted ones resume from their checkpoint, failed ones are kept unless
--rerun-failed; with --stop-after, runs that would not end in time are left for
the next call (exit 130 while any are left). Each run takes GPT2_NPROC_PER_NODE of the visible GPUs (torchrun when
more than one) and runs go side by side until the queue is empty; without GPUs,
TEST_MATRIX_PARALLEL at a time. With --slurm, Slurm places the runs instead
(lib/study/slurm.py): one array task each, and a report job once all have ended.
"""

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from lib.adamwprune import optimizer_label
from lib.classify.corpus import class_folders, require_corpus
from lib.config.cli import cli_flag, set_flag
from lib.config.load import load_settings
from lib.config.sweep import load_sweep
from lib.errors import Refusal
from lib.io import atomic_write_json, atomic_write_text
from lib.study.matrix import PlannedRun, expand
from lib.study.report import FAILURE_FILE, PLAN_FILE, model_sets, run_status, write_report
from lib.study.slurm import SlurmError, submit
from lib.train.settings import Settings, settle
from scripts.launch import ROOT, in_place_env, train_command

RESULTS_PREFIX = "test_matrix_results_"
FINISHED = ("completed", "time_budget")
TAIL_LINES = 30
EXIT_REASONS = {
    2: "refused: a configuration, data or checkpoint error, or out of memory (its log says which)",
    3: "diverged: the loss became NaN or infinite",
}


def flags_for(run: PlannedRun) -> list[str]:
    """The gpt2/train.py flags that apply a run's overrides (swept settings through --set)."""
    swept = dict(run.swept)
    flags = [
        item
        for path, value in run.overrides().items()
        if path not in swept
        for item in (cli_flag(path), str(value))
    ]
    return flags + [item for path, value in run.swept for item in set_flag(path, value)]


def resolved_config_text(base: Settings, run: PlannedRun, cmd: list[str]) -> str:
    """config.txt: every resolved setting of the run, then the command that ran it."""
    s, _ = settle(base, run.overrides())
    lines = [f"# {run.name}: resolved settings (base config.py + matrix overrides)"]
    for section, values in s.to_dict().items():
        if section != "matrix":
            lines += [f"{section}.{name} = {value!r}" for name, value in values.items()]
    lines.append("# command: " + " ".join(cmd))
    return "\n".join(lines) + "\n"


PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What stops the runner, and through it its runs: Ctrl-C, kill, a closed terminal or SSH session."""


def die_with_parent(parent: int):
    """A child's set-up (Popen preexec_fn): SIGTERM it when `parent` exits, on Linux (prctl), so a
    run never trains on, unwatched, after its runner was killed; a run answers SIGTERM with a
    checkpoint. Elsewhere it does nothing."""

    def setup() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux
            return
        if os.getppid() != parent:  # the runner died before prctl took hold
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def failure_reason(returncode: int) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        return f"killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    return EXIT_REASONS.get(returncode, f"crashed (exit code {returncode})")


def log_tail(path: Path) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-TAIL_LINES:])


def choose_results_dir(requested: str | None, config_sha: str) -> Path:
    """--results, else the newest folder made from this config.py, else a new one."""
    if requested:
        return Path(requested)
    for folder in sorted(Path.cwd().glob(RESULTS_PREFIX + "*"), reverse=True):
        plan = folder / PLAN_FILE
        if plan.is_file() and json.loads(plan.read_text()).get("config_sha256") == config_sha:
            return folder
    return Path(RESULTS_PREFIX + time.strftime("%Y%m%d-%H%M%S"))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    import torch

    count = torch.cuda.device_count()
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def slots(parallel: int, nproc: int = 1, gpus: list[str] | None = None) -> list[str | None]:
    """GPU groups of `nproc` (CUDA_VISIBLE_DEVICES values), one run each; without GPUs `parallel` CPU slots."""
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return [None] * parallel
    if nproc > len(gpus):
        raise Refusal(
            f"each run wants GPT2_NPROC_PER_NODE={nproc} GPUs but {len(gpus)} are visible; lower it"
        )
    return [",".join(gpus[i : i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]


class Runner:
    """Launches the pending runs into free slots and records how each ended."""

    def __init__(self, results: Path, base: Settings, runs: list[PlannedRun], rerun_failed: bool):
        self.results, self.base, self.runs = results, base, runs
        self.rerun_failed = rerun_failed
        self.stopping = False

    def todo(self) -> list[PlannedRun]:
        pending = []
        for run in self.runs:
            status, _ = run_status(self.results / run.name)
            if status in FINISHED or (status == "failed" and not self.rerun_failed):
                continue
            pending.append(run)
        return pending

    def launch(self, run: PlannedRun, gpu: str | None) -> subprocess.Popen:
        run_dir = self.results / run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / FAILURE_FILE).unlink(missing_ok=True)
        resume = (run_dir / "ckpt.pt").is_file()
        args = ["--config", str(self.results / "config.py"), "--out-dir", str(run_dir), *flags_for(run)]
        args += ["--tracker-group", self.results.name, *(["--resume"] if resume else [])]
        cmd = train_command(self.base.runtime.nproc_per_node, args)
        atomic_write_text(run_dir / "config.txt", resolved_config_text(self.base, run, cmd))
        env = in_place_env(dict(os.environ, PYTHONUNBUFFERED="1"))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        console = open(run_dir / "console.log", "ab")
        # Own process group: a terminal's Ctrl-C reaches only the runner, which stops children with
        # SIGTERM; and a child gets SIGTERM when the runner dies however it dies (SIGKILL included).
        return subprocess.Popen(
            cmd,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
        )

    def finish(self, run: PlannedRun, returncode: int) -> str:
        run_dir = self.results / run.name
        if returncode == 0:
            return "done"
        if returncode == 130 or self.stopping:
            return "interrupted"
        atomic_write_json(
            run_dir / FAILURE_FILE,
            {
                "status": "failed",
                "returncode": returncode,
                "reason": failure_reason(returncode),
                "log_tail": log_tail(run_dir / "console.log"),
            },
        )
        return "failed"

    def run_task(self, index: int) -> int:
        """Run plan entry `index` in the foreground (a Slurm array task); its exit code."""
        if not 0 <= index < len(self.runs):
            raise Refusal(f"--task {index}: the matrix has runs 0..{len(self.runs) - 1}")
        run = self.runs[index]
        status, _ = run_status(self.results / run.name)
        if status in FINISHED or (status == "failed" and not self.rerun_failed):
            print(f"{run.name}: {status} before; nothing to do")
            return 0
        proc = self.launch(run, gpu=None)  # the GPUs Slurm gave this task (CUDA_VISIBLE_DEVICES)
        requeue = []

        def on_signal(signum, _frame):  # scancel, preemption or the time limit: the run checkpoints
            self.stopping = True
            if signum == signal.SIGUSR1:  # Slurm's early signal (--signal=B:USR1@N): then requeue
                requeue.append(signum)
            proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, on_signal) for s in (*STOP_SIGNALS, signal.SIGUSR1)}
        try:
            returncode = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        outcome = self.finish(run, returncode)
        print(f"{run.name}: {outcome}", flush=True)
        if requeue and outcome == "interrupted":
            return requeue_task(run.name)
        return {"done": 0, "interrupted": 130}.get(outcome, 1)

    def run_all(self, parallel: int, stop_after: float | None = None) -> dict:
        """Run the pending runs, `parallel` at a time (one per GPU group when there are GPUs).

        With `stop_after` (seconds), no run is started that would not end in time, judged by the
        longest run that ended in this call; the rest stay pending for the next call, so a chunk
        of a study never spends its last minutes on a run that its time limit would cut short.
        """
        queue = self.todo()
        started = time.monotonic()
        launched: dict[subprocess.Popen, float] = {}
        longest = 0.0
        free = slots(parallel, self.base.runtime.nproc_per_node)
        running: dict[subprocess.Popen, tuple[PlannedRun, str | None]] = {}
        counts = {"done": 0, "failed": 0, "interrupted": 0}
        skipped = len(self.runs) - len(queue)

        def fits() -> bool:
            return stop_after is None or time.monotonic() - started + longest <= stop_after

        def on_signal(signum, _frame):
            self.stopping = True
            for proc in running:
                proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
        bar = tqdm(
            total=len(self.runs),
            initial=skipped,
            unit="run",
            desc="matrix",
            dynamic_ncols=True,
            mininterval=5,
        )
        bar.postfix_dict = {}
        try:
            while queue or running:
                while queue and free and not self.stopping and fits():
                    run, gpu = queue.pop(0), free.pop(0)
                    proc = self.launch(run, gpu)
                    running[proc], launched[proc] = (run, gpu), time.monotonic()
                for proc in [p for p in running if p.poll() is not None]:
                    run, gpu = running.pop(proc)
                    longest = max(longest, time.monotonic() - launched.pop(proc))
                    free.append(gpu)
                    outcome = self.finish(run, proc.returncode)
                    counts[outcome] += 1
                    bar.update(1)
                    if outcome == "failed":
                        tqdm.write(
                            f"{run.name} failed: {failure_reason(proc.returncode)} (see {run.name}/console.log)"
                        )
                postfix = {"running": len(running), "failed": counts["failed"]}
                if postfix != bar.postfix_dict:
                    bar.postfix_dict = postfix
                    bar.set_postfix(postfix)
                if not running and (self.stopping or (queue and not fits())):
                    break
                time.sleep(0.2)
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if queue and not self.stopping:
            print(f"--stop-after {stop_after:g}: {len(queue)} runs left for the next call")
        return {**counts, "skipped": skipped, "not_started": len(queue)}


def requeue_task(name: str) -> int:
    """Put this Slurm task back in the queue (`scontrol requeue`): it runs again later and resumes
    `name` from the checkpoint written just now. The exit code of this attempt."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        print(f"{name}: stopped by SIGUSR1 outside Slurm; run the task again to resume it")
        return 130
    out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if out.returncode != 0:
        print(
            f"{name}: could not requeue job {job} ({out.stderr.strip()}); submit the matrix again to resume it",
            flush=True,
        )
        return 130
    print(
        f"{name}: checkpointed before the time limit; job {job} requeued, it resumes when it runs again",
        flush=True,
    )
    return 0


def newest_results() -> Path | None:
    folders = sorted(p for p in Path.cwd().glob(RESULTS_PREFIX + "*") if (p / PLAN_FILE).is_file())
    return folders[-1] if folders else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="config.py")
    p.add_argument("--results", help="results folder (default: newest from this config.py, else new)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--rerun-failed", action="store_true", help="run failed runs again")
    p.add_argument("--report-only", nargs="?", const="", metavar="RESULTS_DIR", help="rebuild the report")
    p.add_argument("--is-matrix", action="store_true", help="exit 0 if config.py selects a matrix, else 1")
    p.add_argument("--slurm", action="store_true", help="submit as a Slurm job array plus a report job")
    p.add_argument("--task", type=int, metavar="I", help="run plan entry I only (a Slurm array task)")
    p.add_argument(
        "--sweep", metavar="FILE", help="also sweep the values in this TOML file (lib/config/sweep.py)"
    )
    p.add_argument(
        "--classify-data",
        metavar="PATH",
        help="a labelled .csv/.tsv/.jsonl file or folder of class folders: prepare it and run the\n"
        "generative classifier on it with this configuration (make classify DATA=PATH)",
    )
    p.add_argument(
        "--stop-after",
        type=float,
        metavar="SECONDS",
        help="start no run that would end later than SECONDS from now (judged by the longest run so far)",
    )
    args = p.parse_args(argv)

    if args.report_only is not None:
        results = Path(args.report_only) if args.report_only else newest_results()
        if results is None or not (results / PLAN_FILE).is_file():
            print(
                f"error: no test matrix results folder ({RESULTS_PREFIX}*/{PLAN_FILE}) found", file=sys.stderr
            )
            return 2
        write_report(results)
        print(f"report: {results / 'summary.md'}")
        return classifier_report(results, load_settings(results / "config.py")) if model_sets(results) else 0
    try:
        base = load_settings(args.config)
        if args.classify_data:
            base = base.replace(
                {"classify.enabled": True, "classify.source": "file", "classify.path": args.classify_data}
            )
            from gpt2.prepare_labelled import prepare_labelled

            prepare_labelled(base)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.is_matrix:  # the generative classifier is a matrix too: one run per class
        return 0 if base.matrix.enabled or base.classify.enabled else 1
    try:
        sweep = load_sweep(args.sweep) if args.sweep else None
        corpus = require_corpus(base.data.data_dir) if base.classify.enabled else None
        runs, dropped = expand(base, sweep, class_folders(corpus) if corpus else None)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.task is None:
        print(f"test matrix: {len(runs)} runs")
        for run in runs:
            print(f"  {run.name:<45} {' '.join(flags_for(run))}")
        for line in dropped:
            print(f"  {line}")
    if args.dry_run:
        return 0

    config_text = Path(args.config).read_text()
    sweep_text = Path(args.sweep).read_text() if args.sweep else ""
    # class models belong to one labelled corpus: another corpus is another results folder
    corpus_id = corpus["corpus"] if corpus else ""
    sha = hashlib.sha256(
        (config_text + sweep_text + corpus_id + (args.classify_data or "")).encode()
    ).hexdigest()
    results = choose_results_dir(args.results, sha)
    results.mkdir(parents=True, exist_ok=True)
    if not (results / PLAN_FILE).is_file():
        shutil.copy2(args.config, results / "config.py")
        dot_config = Path(args.config).parent / ".config"
        if dot_config.is_file():
            shutil.copy2(dot_config, results / ".config")
        plan = {
            "config_sha256": sha,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": [
                {
                    "name": r.name,
                    "optimizer": r.optimizer,
                    "optimizer_label": optimizer_label(r.optimizer, base.adamwprune.base),
                    "method": r.method,
                    "variant": r.variant,
                    "sparsity": r.sparsity,
                    "seed": r.seed,
                    "swept": dict(r.swept),
                    **({"class": r.label, "model_set": r.model_set} if r.label else {}),
                }
                for r in runs
            ],
            "dropped": dropped,
        }
        if corpus:
            plan["classify"] = {"corpus": corpus["corpus"], "classes": class_folders(corpus)}
        if sweep is not None:
            plan["sweep"] = {"metric": sweep.metric, "values": sweep.values, "file": str(args.sweep)}
            atomic_write_text(results / "sweep.toml", sweep_text)
        atomic_write_json(results / PLAN_FILE, plan)
    runner = Runner(results, base, runs, args.rerun_failed)
    if args.task is not None:
        try:
            return runner.run_task(args.task)
        except Refusal as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"results: {results}")
    if args.slurm:
        try:
            print(
                submit(
                    results, base, len(runs), sys.executable, ROOT, results / "sweep.toml" if sweep else None
                )
            )
        except SlurmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        counts = runner.run_all(base.matrix.parallel, args.stop_after)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = write_report(results)
    print(
        f"this time: {counts['done']} finished, {counts['failed']} failed, {counts['interrupted']} "
        f"interrupted; {counts['skipped']} kept from before | report: {results / 'summary.md'}"
    )
    if runner.stopping or counts["not_started"]:
        return 130
    if any(r["status"] == "failed" for r in rows):
        return 1
    return classifier_report(results, base) if corpus else 0


def classifier_report(results: Path, base: Settings) -> int:
    """Score and report the results folder's classifiers (gpt2/classify.py); print each one's accuracy."""
    from gpt2.classify import CLASSIFY_DIR, report_results

    try:
        reports = report_results(results, base)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in reports:
        base_acc = (
            "" if r["baseline_accuracy"] is None else f" | tf-idf + LR {100 * r['baseline_accuracy']:.2f}%"
        )
        print(
            f"{r['model_set']}: accuracy {100 * r['accuracy']:.2f}% | macro-F1 {100 * r['macro_f1']:.2f}%"
            f"{base_acc} | {r['documents']} test documents, {r['documents_per_sec']:.1f}/s"
        )
    print(f"classifier report: {results / CLASSIFY_DIR / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
