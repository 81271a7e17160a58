"""What a run leaves behind: its folder, environment, summary and loss plot."""

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch

from lib.io import atomic_write_json
from lib.measure.metrics import read_metrics
from lib.runtime.distributed import Dist

log = logging.getLogger("train")
PACKAGES = ("torch", "numpy", "tiktoken", "kconfiglib", "datasets", "tqdm", "matplotlib")


def new_run_dir(output_dir: str, name: str) -> Path:
    """output_dir/name-YYYYmmdd-HHMMSS, never an existing folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(output_dir) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(output_dir) / f"{name}-{stamp}-{n}"
    return path


# In OUTPUT_DIR: the folders of runs started with --out-dir, one absolute path a line, so that a
# resume without a folder (`make RESUME=1`) finds them as it finds OUTPUT_DIR/<name>-* runs.
OUT_DIRS_FILE = ".out-dirs"


def remember_run_dir(output_dir: str, run_dir: Path) -> None:
    """Add a run started with --out-dir to OUTPUT_DIR's list. A line appended with O_APPEND is one
    write, so runs starting together lose no entry; the list is never rewritten (a folder since
    removed is skipped when read). Where OUTPUT_DIR cannot be written, the run is only not listed."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(output_dir) / OUT_DIRS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
        try:
            os.write(fd, f"{Path(run_dir).resolve()}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        log.warning(
            "could not list %s in %s/%s (%s): resume it by naming it", run_dir, output_dir, OUT_DIRS_FILE, e
        )


def latest_run_dir(
    output_dir: str, name: str, matches: Callable[[Path], bool] = lambda run_dir: True
) -> Path | None:
    """The newest run folder with a checkpoint that `matches` (e.g. the same dataset): of
    output_dir/name-* and the --out-dir runs output_dir lists (remember_run_dir)."""
    folders = set(Path(output_dir).glob(f"{name}-*"))
    try:
        listed = (Path(output_dir) / OUT_DIRS_FILE).read_text(encoding="utf-8", errors="replace")
        folders |= {Path(line) for line in listed.splitlines() if line.strip()}
    except OSError:
        pass
    candidates = [p for p in folders if (p / "ckpt.pt").is_file() and matches(p)]
    return max(candidates, key=lambda p: (p / "ckpt.pt").stat().st_mtime, default=None)


def environment(device: torch.device) -> dict:
    """Versions, host and device: what a reader needs to reproduce the run."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": versions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "num_threads": torch.get_num_threads(),
    }
    try:
        root = Path(__file__).resolve().parents[2]
        env["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def copy_config(config_py: Path, run_dir: Path) -> None:
    """Keep the exact configuration beside the run: config.py and the .config beside it."""
    shutil.copy2(config_py, run_dir / "config.py")
    dot_config = config_py.parent / ".config"
    if dot_config.is_file():
        shutil.copy2(dot_config, run_dir / ".config")


def start_records(run_dir: Path, config_py: Path, device: torch.device, world_size: int, fresh: bool) -> None:
    """A fresh run's folder starts clean, with its config.py and .config; every session (a resume
    too) records the environment it ran in."""
    if fresh:  # a folder without a checkpoint holds at most an attempt that died before its first one
        for stale in ("metrics.jsonl", "summary.json"):
            (run_dir / stale).unlink(missing_ok=True)
        copy_config(config_py, run_dir)
    atomic_write_json(run_dir / "environment.json", {**environment(device), "world_size": world_size})


def plot_losses(metrics_path: Path, out: Path, title: str) -> None:
    """Train loss per logged step and train/val loss per evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(metrics_path).is_file():  # stopped before its first record: nothing to plot
        return
    records = read_metrics(metrics_path)
    train = [(r["iter"], r["loss"]) for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train, strict=True), lw=0.8, alpha=0.6, label="train (logged steps)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (eval)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val (eval)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def setup_logging(run_dir: Path, dist: Dist) -> None:
    """Log to stdout and run_dir/output.log (replacing handlers of an earlier run in this process).

    Under torchrun only rank 0 does; the other ranks print warnings and errors to stderr.
    """
    root = logging.getLogger()
    for handler in getattr(setup_logging, "handlers", []):
        root.removeHandler(handler)
        handler.close()
    if dist.is_main:
        fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        root.setLevel(logging.INFO)
        setup_logging.handlers = [
            logging.StreamHandler(sys.stdout),
            logging.FileHandler(run_dir / "output.log"),
        ]
    else:
        fmt = logging.Formatter(f"%(asctime)s [rank {dist.rank}] %(message)s", datefmt="%H:%M:%S")
        root.setLevel(logging.WARNING)
        setup_logging.handlers = [logging.StreamHandler(sys.stderr)]
    for handler in setup_logging.handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
