"""The matrix as a Slurm job array: the scripts, one array task, and (opt-in) a real localhost Slurm.

The last test submits a tiny matrix to a real Slurm: start one with
`sudo scripts/slurm-localhost.sh` and run `GPT2_TEST_SLURM=1 make test PYTEST_ARGS="-m slurm"`
(or `make test-slurm`, which does both).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.study.slurm import array_script, job_id, report_script
from scripts import run_test_matrix

from .conftest import ROOT, TINY_RUN, make_config

TWO_RUNS = """CONFIG_GPT2_MAX_ITERS=6
CONFIG_GPT2_EVAL_INTERVAL=6
CONFIG_PRUNING_WARMUP=2
CONFIG_OPTIMIZER_SELECT_ADAMW=y
CONFIG_PRUNING_MODE_MULTIPLE=y
# CONFIG_PRUNING_ENABLE_STATE is not set
"""


def test_array_script_runs_one_plan_entry_per_task(tmp_path):
    text = array_script(
        results=tmp_path / "res",
        num_runs=5,
        python="/venv/bin/python",
        root=Path("/repo"),
        gpus_per_task=2,
        max_parallel=3,
        extra="--partition=gpu --time=01:00:00",
        signal_seconds=300,
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    options = ("--array=0-4%3", "--gres=gpu:2", "--partition=gpu", "--time=01:00:00", "--requeue")
    for option in (*options, "--signal=B:USR1@300", "--open-mode=append"):
        assert f"#SBATCH {option}" in lines
    assert f"#SBATCH --output={tmp_path / 'res' / 'slurm'}/%x_%A_%a.out" in lines
    assert lines[-1].startswith("exec /venv/bin/python -m scripts.run_test_matrix --config ")
    assert lines[-1].endswith(f'--results {tmp_path / "res"} --task "$SLURM_ARRAY_TASK_ID"')
    assert "cd /repo" in lines


def test_cpu_runs_ask_for_no_gpu_and_the_report_job_never_does(tmp_path):
    text = array_script(results=tmp_path, num_runs=1, python="py", root=tmp_path, gpus_per_task=0)
    assert "--gres" not in text and "#SBATCH --array=0-0" in text
    report = report_script(results=tmp_path, python="py", root=tmp_path, extra="--gres=gpu:1 -p gpu")
    assert "--gres" not in report and "#SBATCH -p" in report and "--report-only" in report


def test_sbatch_job_ids_are_parsed_or_refused():
    assert job_id("1234\n") == "1234" and job_id("77;cluster") == "77"
    with pytest.raises(ValueError, match="no job id"):
        job_id("sbatch: error: Batch job submission failed")


@pytest.fixture
def two_run_config(tmp_path, kconf, data_dir):
    return make_config(tmp_path, TINY_RUN + TWO_RUNS + f'CONFIG_DATA_DIR="{data_dir}"\n', kconf)


def test_without_sbatch_the_scripts_are_written_and_the_user_told(
    tmp_path, two_run_config, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch anywhere
    assert run_test_matrix.main(["--config", str(two_run_config), "--slurm"]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err
    (results,) = tmp_path.glob("test_matrix_results_*")
    script = (results / "slurm" / "matrix.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script and "--gres" not in script  # DEVICE="cpu"
    assert (results / "slurm" / "report.sbatch").is_file()


@pytest.mark.slow
def test_an_array_task_runs_its_run_and_then_has_nothing_left_to_do(tmp_path, two_run_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "res"
    argv = ["--config", str(two_run_config), "--results", str(results)]
    assert run_test_matrix.main([*argv, "--dry-run"]) == 0
    assert run_test_matrix.main([*argv, "--task", "1"]) == 0
    plan = json.loads((results / "matrix.json").read_text())
    first, second = (results / r["name"] for r in plan["runs"])
    assert json.loads((second / "summary.json").read_text())["status"] == "completed"
    assert not first.exists()  # task 1 ran plan entry 1 only
    assert run_test_matrix.main([*argv, "--task", "1"]) == 0  # finished: kept, not rerun
    assert run_test_matrix.main([*argv, "--task", "2"]) == 2  # no such entry


def slurm_available() -> bool:
    if os.environ.get("GPT2_TEST_SLURM") != "1" or shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


@pytest.mark.slurm
@pytest.mark.skipif(
    not slurm_available(), reason="opt-in: GPT2_TEST_SLURM=1 and a Slurm cluster (make test-slurm)"
)
def test_a_real_slurm_runs_the_matrix_and_then_the_report(tmp_path, two_run_config):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "scripts.run_test_matrix", "--config", str(two_run_config), "--slurm"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    (results,) = tmp_path.glob("test_matrix_results_*")
    jobs = json.loads((results / "slurm" / "jobs.json").read_text())
    deadline = time.time() + 300
    while subprocess.run(
        ["squeue", "-h", "-j", f"{jobs['array']},{jobs['report']}"], capture_output=True, text=True
    ).stdout.strip():
        assert time.time() < deadline, "the Slurm jobs did not finish in 5 minutes"
        time.sleep(1)
    summary = json.loads((results / "summary.json").read_text())
    assert sorted(r["status"] for r in summary["runs"]) == ["completed", "completed"]
    logs = sorted(p.name for p in (results / "slurm").glob("*.out"))
    assert len(logs) == 3  # two array tasks and the report job


@pytest.mark.slurm
@pytest.mark.skipif(
    not slurm_available(), reason="opt-in: GPT2_TEST_SLURM=1 and a Slurm cluster (make test-slurm)"
)
def test_a_task_signalled_before_its_time_limit_checkpoints_requeues_and_resumes(tmp_path, kconf, data_dir):
    """What Slurm does at --signal=B:USR1@N (sent here at once with scancel, as Slurm's own timer
    would send it): the run checkpoints, the task requeues itself and, run again, resumes to the end."""
    config = make_config(
        tmp_path,
        TINY_RUN
        + f"""CONFIG_GPT2_MAX_ITERS=60
CONFIG_GPT2_EVAL_INTERVAL=30
CONFIG_OPTIMIZER_SELECT_ADAMW=y
CONFIG_PRUNING_MODE_MULTIPLE=y
# CONFIG_PRUNING_ENABLE_MAGNITUDE is not set
# CONFIG_PRUNING_ENABLE_STATE is not set
CONFIG_TEST_MATRIX_SLURM_SIGNAL=120
CONFIG_DATA_DIR="{data_dir}"
""",
        kconf,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "scripts.run_test_matrix", "--config", str(config), "--slurm"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    (results,) = tmp_path.glob("test_matrix_results_*")
    assert "#SBATCH --signal=B:USR1@120" in (results / "slurm" / "matrix.sbatch").read_text()
    jobs = json.loads((results / "slurm" / "jobs.json").read_text())
    metrics = results / "gpt2_adamw_none" / "metrics.jsonl"
    deadline = time.time() + 300
    while not metrics.is_file() or len(metrics.read_text().splitlines()) < 5:
        assert time.time() < deadline, "the task did not start training"
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", jobs["array"]], check=True)
    deadline = time.time() + 600
    while subprocess.run(
        ["squeue", "-h", "-j", f"{jobs['array']},{jobs['report']}"], capture_output=True, text=True
    ).stdout.strip():
        assert time.time() < deadline, "the requeued task and the report did not finish in 10 minutes"
        time.sleep(1)
    run = results / "gpt2_adamw_none"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iters"] == 60
    assert "resumed at iter" in (run / "output.log").read_text()
    (log,) = (results / "slurm").glob("*_0.out")  # the task's log, both attempts (--open-mode=append)
    assert "requeued, it resumes when it runs again" in log.read_text()
    report = json.loads((results / "summary.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["completed"]
