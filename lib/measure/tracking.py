"""Optional experiment trackers: the run's settings once, then every metrics record.

TRACKERS maps the Kconfig choice name to a function that starts a tracker; the
run folder keeps everything either way.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lib.errors import Refusal
from lib.fields import check, kc


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackingSettings:
    """Where (if anywhere) runs are tracked besides their own folder."""

    tracker: str = field(default="none", metadata=kc("TRACKER", resumable=True))
    """none, or the experiment tracker runs are logged to (its Kconfig choice)."""
    project: str = field(default="gpt2-prune", metadata=kc("TRACKER_PROJECT", resumable=True))
    """The tracker's project the runs are logged under."""
    offline: bool = field(default=True, metadata=kc("TRACKER_OFFLINE", resumable=True))
    """Write tracker runs locally (no account, no network)."""
    group: str = field(default="", metadata=kc("TRACKER_GROUP", "--tracker-group", resumable=True))
    """Runs that belong together (the test matrix sets its results folder's name)."""

    def __post_init__(self) -> None:
        check(self, "tracker", self.tracker in TRACKERS, f"one of {', '.join(TRACKERS)}")
        check(self, "project", self.project != "", "a non-empty name")


class Tracker(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...
    def finish(self) -> None: ...


class _Trackio:
    def __init__(self, s: TrackingSettings, run_dir: Path, name: str, config: dict):
        import trackio

        self.trackio = trackio
        trackio.init(project=s.project, name=name, group=s.group or None, config=config, resume="allow")

    def log(self, metrics: dict, step: int) -> None:
        self.trackio.log(metrics, step=step)

    def finish(self) -> None:
        self.trackio.finish()


class _Wandb:
    def __init__(self, s: TrackingSettings, run_dir: Path, name: str, config: dict):
        import wandb

        self.run = wandb.init(
            project=s.project,
            name=name,
            group=s.group or None,
            config=config,
            dir=str(run_dir),
            mode="offline" if s.offline else "online",
        )

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()


TRACKERS: dict[str, Callable[..., Tracker] | None] = {"none": None, "trackio": _Trackio, "wandb": _Wandb}


def start_tracker(s: TrackingSettings, run_dir: Path, name: str, config: dict) -> Tracker | None:
    """The configured tracker, started for this run; None without one."""
    factory = TRACKERS[s.tracker]
    if factory is None:
        return None
    try:
        return factory(s, run_dir, name, config)
    except ImportError as e:
        raise Refusal(
            f"TRACKER={s.tracker!r} needs the {e.name} package: pip install -e '.[tracking]' "
            "(or choose no tracker in make menuconfig)"
        ) from None
