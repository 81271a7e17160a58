"""The test matrix as a Slurm job array: one array task per run, then a report job.

Slurm does the scheduling across hosts; this module only writes the two batch
scripts. Task i of the array runs the i-th run of the results folder's plan
(matrix.json) through `run_test_matrix --task i`, in the foreground, on the
GPUs Slurm gives it; a second job, started once every task has ended
(`--dependency=afterany`), writes the report. Runs that finished before are
skipped, interrupted ones resume, so resubmitting completes a matrix.
"""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from lib.errors import Refusal
from lib.io import atomic_write_json, atomic_write_text

SLURM_DIR = "slurm"
ARRAY_SCRIPT = "matrix.sbatch"
REPORT_SCRIPT = "report.sbatch"


def _header(name: str, output: Path, options: list[str]) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={output}"]
    return lines + [f"#SBATCH {o}" for o in options]


def array_script(
    *,
    results: Path,
    num_runs: int,
    python: str,
    root: Path,
    gpus_per_task: int,
    max_parallel: int = 0,
    extra: str = "",
    sweep: Path | None = None,
    signal_seconds: int = 0,
) -> str:
    """The job-array script: task $SLURM_ARRAY_TASK_ID runs plan entry of that index.

    gpus_per_task 0 asks for no GPU (CPU runs); max_parallel > 0 caps concurrent tasks
    (--array=0-N%M); `extra` is appended as sbatch options (partition, time, account);
    `sweep` is the results folder's copy of a sweep file, so tasks expand the same runs.
    Tasks are requeueable (a preempted one resumes from its checkpoint) and append to their
    log; signal_seconds > 0 asks for SIGUSR1 that long before the time limit, on which the
    task checkpoints its run and requeues itself (scripts/run_test_matrix.py --task).
    """
    if num_runs < 1:
        raise SlurmError("the matrix has no runs to submit")
    results = results.resolve()
    array = f"0-{num_runs - 1}" + (f"%{max_parallel}" if max_parallel > 0 else "")
    options = [f"--array={array}", "--ntasks=1", "--requeue", "--open-mode=append"]
    if signal_seconds > 0:
        options.append(f"--signal=B:USR1@{signal_seconds}")
    if gpus_per_task > 0:
        options.append(f"--gres=gpu:{gpus_per_task}")
    options += shlex.split(extra)
    output = results / SLURM_DIR / "%x_%A_%a.out"
    command = [python, "-m", "scripts.run_test_matrix", "--config", str(results / "config.py")]
    command += ["--results", str(results)]
    if sweep is not None:
        command += ["--sweep", str(sweep.resolve())]
    command.append("--task")
    body = [
        f"cd {shlex.quote(str(root))}",
        "# Slurm sets CUDA_VISIBLE_DEVICES to this task's GPUs; the run uses them all.",
        f'exec {shlex.join(command)} "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(_header(f"{results.name}", output, options) + ["", *body]) + "\n"


def report_script(*, results: Path, python: str, root: Path, extra: str = "") -> str:
    """The report job: rebuilds summary.{md,csv,json} and plots once the array has ended."""
    results = results.resolve()
    options = ["--ntasks=1"] + [o for o in shlex.split(extra) if not o.startswith("--gres")]
    output = results / SLURM_DIR / "%x_%j.out"
    command = [python, "-m", "scripts.run_test_matrix", "--report-only", str(results)]
    body = [f"cd {shlex.quote(str(root))}", f"exec {shlex.join(command)}"]
    return "\n".join(_header(f"{results.name}-report", output, options) + ["", *body]) + "\n"


def job_id(sbatch_output: str) -> str:
    """The job id `sbatch --parsable` printed ("1234" or "1234;cluster")."""
    match = re.match(r"\s*(\d+)", sbatch_output)
    if match is None:
        raise ValueError(f"sbatch printed no job id: {sbatch_output.strip()!r}")
    return match.group(1)


class SlurmError(Refusal, RuntimeError):
    """Submission failed; the message says what to do (the scripts are written either way)."""


def submit(results: Path, base, num_runs: int, python: str, root: Path, sweep: Path | None = None) -> str:
    """Write the job-array and report scripts into results/slurm/ and submit both; what to tell the user.

    Raises SlurmError when sbatch is missing or refuses; the scripts stay written for a manual submit.
    """
    m = base.matrix
    folder = results / SLURM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    gpus = 0 if base.runtime.device == "cpu" else base.runtime.nproc_per_node
    common = dict(python=python, root=root)
    array = folder / ARRAY_SCRIPT
    atomic_write_text(
        array,
        array_script(
            results=results,
            num_runs=num_runs,
            gpus_per_task=gpus,
            max_parallel=m.slurm_max_parallel,
            extra=m.slurm_args,
            sweep=sweep,
            signal_seconds=m.slurm_signal,
            **common,
        ),
    )
    report = folder / REPORT_SCRIPT
    atomic_write_text(report, report_script(results=results, extra=m.slurm_args, **common))
    if shutil.which("sbatch") is None:
        raise SlurmError(
            f"sbatch is not on PATH. The scripts are in {folder}/: submit them on a Slurm login "
            f"node with `sbatch {array}`, then `sbatch --dependency=afterany:<job id> {report}`."
        )
    try:
        out = subprocess.run(["sbatch", "--parsable", str(array)], capture_output=True, text=True, check=True)
        array_id = job_id(out.stdout)
        out = subprocess.run(
            ["sbatch", "--parsable", f"--dependency=afterany:{array_id}", str(report)],
            capture_output=True,
            text=True,
            check=True,
        )
        report_id = job_id(out.stdout)
    except subprocess.CalledProcessError as e:
        raise SlurmError(f"sbatch failed ({e.returncode}): {e.stderr.strip()}") from None
    atomic_write_json(folder / "jobs.json", {"array": array_id, "report": report_id})
    return (
        f"submitted: job array {array_id} ({num_runs} tasks), report job {report_id} after it.\n"
        f"  squeue -j {array_id},{report_id}     # progress; task logs in {folder}/\n"
        f"  scancel {array_id}                  # stop: runs checkpoint; submit again to resume\n"
        f"  (a task near its time limit or preempted checkpoints and is requeued: it resumes by itself)"
    )
