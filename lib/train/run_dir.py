"""The run folder: its name, a new one or the one to resume, and which earlier runs a resume may take."""

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path

from lib.adamwprune import identity_of
from lib.measure.records import latest_run_dir, new_run_dir, remember_run_dir
from lib.runtime.distributed import Dist, broadcast
from lib.train.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from lib.train.loop import resume_conflicts, settings_changes
from lib.train.settings import Settings, settings_from_dict, settle

log = logging.getLogger("train")
LOCK_FILE = ".lock"
_HELD: list[int] = []  # descriptors of the run folders this process writes, open while it does


def _take_lock(run_dir: Path) -> int:
    """A descriptor holding `run_dir`'s exclusive lock, or a refusal naming the process holding it."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise CheckpointError(f"cannot lock {run_dir} ({e.strerror}); choose another --out-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise CheckpointError(
            f"{run_dir} is being written by another process (pid {holder}): one run folder has one writer. "
            "Wait for that run to end (then --resume it if it stopped), or choose another --out-dir."
        ) from None
    return fd


def lock_run_dir(run_dir: Path) -> None:
    """Take `run_dir`'s exclusive lock until release_run_dirs() or the end of this process (the
    kernel releases it however the process ends), or refuse: another process is writing that run."""
    fd = _take_lock(run_dir)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD.append(fd)


def refuse_if_written(run_dir: Path) -> None:
    """Refuse, as lock_run_dir would, a run folder another process is writing now (its settings
    and checkpoint may be half-way); the lock is given back at once."""
    if (Path(run_dir) / LOCK_FILE).is_file():
        os.close(_take_lock(run_dir))


def check_writable(run_dir: Path) -> None:
    """Refuse a run folder this process cannot write (read-only, another user's) before it starts:
    a temporary file is made and removed, which is what every record of the run needs."""
    try:
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CheckpointError(
            f"{run_dir} cannot be written ({e.strerror}): a run writes its checkpoint and records there. "
            "Make it writable, or copy the run folder somewhere writable and resume the copy "
            "(--resume COPY)."
        ) from None


def release_run_dirs() -> None:
    """Give up the run folders' locks this process holds (a run called in-process has ended)."""
    while _HELD:
        os.close(_HELD.pop())


def run_name(s: Settings) -> str:
    """GPT2_RUN_NAME, or the matrix's name of this combination without a seed:
    gpt2_<optimizer>[_<variant>]_<pruning>[_<sparsity%>] (lib/adamwprune.RunIdentity)."""
    return s.runtime.run_name or identity_of(s).name()


def prepare_run_dir(
    s: Settings, dist: Dist, resume: str | None, out_dir: str | None
) -> tuple[Path, dict | None]:
    """Rank 0 chooses (and makes) the run folder; every rank gets it, and the checkpoint to resume."""
    chosen = error = None
    if dist.is_main:
        try:
            run_dir = choose_run_dir(s, resume, out_dir)
            if resume is None:
                run_dir.mkdir(parents=True, exist_ok=True)
                if out_dir:
                    remember_run_dir(s.runtime.output_dir, run_dir)
            if run_dir.is_dir():
                check_writable(run_dir)
                lock_run_dir(run_dir)  # before anything in it is read or written: one writer per run
                check_run_dir(run_dir, resume)
                sweep_run_dir(run_dir)
            else:
                check_run_dir(run_dir, resume)
            chosen = str(run_dir)
        except CheckpointError as e:
            error = str(e)
        except OSError as e:
            error = f"cannot make the run folder: {e}; choose another --out-dir or OUTPUT_DIR"
    chosen, error = broadcast(dist, (chosen, error))
    if error is not None:
        raise CheckpointError(error)
    run_dir = Path(chosen)
    return run_dir, None if resume is None else load_checkpoint(run_dir / CHECKPOINT_FILE)


def sweep_run_dir(run_dir: Path) -> None:
    """Refuse a run folder holding symbolic links (a run writes its own records, never through a
    link to somewhere else), and remove the temporary files of writes that a death cut short
    (lib/io.atomic_write's .<name>.*.tmp, a checkpoint's can be hundreds of MB). Holding the lock,
    no other process is writing them."""
    links = sorted(p.name for p in run_dir.iterdir() if p.is_symlink())
    if links:
        raise CheckpointError(
            f"{run_dir} holds symbolic links ({', '.join(links)}); a run writes its records itself and "
            "never through a link: remove them (or copy what they point to into place), then run again"
        )
    orphans = [p for p in run_dir.glob(".*.tmp") if p.is_file()]
    freed = sum(p.stat().st_size for p in orphans)
    for p in orphans:
        p.unlink()
    if orphans:
        log.warning(
            "removed %d unfinished temporary file(s) (%.1f MB) left in %s by a run that died while writing",
            len(orphans),
            freed / 1e6,
            run_dir,
        )


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """A new run needs a folder without a run in it; a resume needs one with a checkpoint."""
    if resume is None and (run_dir / CHECKPOINT_FILE).exists():
        raise CheckpointError(
            f"{run_dir} already holds a run. Continue it with --resume, or choose another --out-dir."
        )
    if resume is not None and not (run_dir / CHECKPOINT_FILE).is_file():
        raise CheckpointError(f"no checkpoint at {run_dir / CHECKPOINT_FILE}; nothing to resume")


def choose_run_dir(s: Settings, resume: str | None, out_dir: str | None) -> Path:
    """The run folder: a new one, or (with --resume) the one named, or the latest of these settings."""
    if resume is None:
        return Path(out_dir) if out_dir else new_run_dir(s.runtime.output_dir, run_name(s))
    if resume != "auto":
        run_dir = Path(resume)
    elif out_dir:
        run_dir = Path(out_dir)
    else:
        run_dir = latest_run_dir(s.runtime.output_dir, run_name(s), resumable_by(s))
        if run_dir is None:
            raise CheckpointError(
                f"no run named {run_name(s)}-* with a checkpoint and these settings in "
                f"{s.runtime.output_dir}/ (nor among the --out-dir runs it lists); pass the run folder: "
                "--resume RUN_DIR (make RESUME=RUN_DIR)"
            )
    return run_dir


def resumed_settings(
    run_dir: Path, current: Settings, overrides: dict, probe_lock: bool = True
) -> tuple[Settings, dict | None, str | None]:
    """A resumed run's settings: its own (settings.json: what it ran with last), with the flags given
    now on top, settled as a new run's are; the bitter2 scaling record; and a note of what
    config.py (`current`, flags included) says otherwise and the run keeps, or None.

    So `--resume RUN_DIR` continues the run it names, whatever config.py says today: a setting a
    resume may change (GPT2_MAX_ITERS, the evaluation interval, ...) changes only when a flag asks,
    and a flag for one it may not change is refused (Trainer.restore). `probe_lock` (rank 0 only):
    a folder another process is writing is refused first."""
    if probe_lock:
        refuse_if_written(run_dir)
    check_run_dir(run_dir, "resume")
    path = run_dir / "settings.json"
    if not path.is_file():  # a folder with a checkpoint and no settings.json: the checkpoint's
        own = settings_from_dict(load_checkpoint(run_dir / CHECKPOINT_FILE)["settings"])
    else:
        try:
            own = settings_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot read the run's settings from {path} ({e}); the run folder is damaged. Restore "
                "settings.json from a copy, or start a new run."
            ) from None
    s, scaling = settle(own, overrides, settled=True)
    given = set(overrides)
    if s.training.batch_mode == "auto":  # the micro-batch a run chose is its own, not config.py's
        given |= {"training.batch_size", "training.gradient_accumulation"}
    kept = [p for p in settings_changes(current.to_dict(), s.to_dict()) if p not in given]
    if not kept:
        return s, scaling, None
    own_values = {p: getattr(getattr(s, p.split(".")[0]), p.split(".")[1]) for p in kept}
    config_values = {p: getattr(getattr(current, p.split(".")[0]), p.split(".")[1]) for p in kept}
    shown = ", ".join(f"{p} {own_values[p]!r} (config.py: {config_values[p]!r})" for p in kept[:8])
    more = f" and {len(kept) - 8} more" if len(kept) > 8 else ""
    return (
        s,
        scaling,
        f"resuming with the run's own settings, which config.py changes: {shown}{more}. A flag changes "
        "a setting a resume may change (--max-iters, --eval-interval, ...; python -m gpt2.train --help)",
    )


def resumable_by(s: Settings):
    """A test of a run folder: were its settings.json's computations these settings' (dataset, ...)?"""
    current = s.to_dict()
    # GPT2_BATCH_MODE=auto: the micro-batch a run chose is in its settings.json, not in these settings
    chosen = (
        {"training.batch_size", "training.gradient_accumulation"}
        if s.training.batch_mode == "auto"
        else set()
    )

    def ok(run_dir: Path) -> bool:
        try:
            saved = json.loads((run_dir / "settings.json").read_text())
        except (OSError, ValueError):
            return False
        return not set(resume_conflicts(saved, current)) - chosen

    return ok
