"""Training time, interval by interval: the clock behind ms/iter, tokens/s and the time budget.

The trainer logs every GPT2_LOG_INTERVAL steps; each log line's ms/iter is that interval's
training time, evaluations excluded wherever they fall. The run's speed (`throughput`) is the
mean over the intervals in which nothing compiled (the first always does: it warms up). The
meter reads the device's clock only where the trainer logs or evaluates (a synchronize there),
never per step, and saves its own state in the checkpoint so that a resumed run goes on timing
the interval it stopped in.
"""

import time

import torch

from lib.runtime.device import compilations, synchronize


class IntervalMeter:
    """The run's training seconds, the open interval's steps and seconds, and the closed intervals
    that measure its speed ((seconds, steps) each)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.train_seconds = 0.0
        self.intervals: list[tuple[float, int]] = []
        self.interval_steps = 0
        self.interval_seconds = 0.0  # of the open interval, before the last pause
        self._start = 0.0
        self._compiled_before = 0
        self._first = True
        self._paused_compilations = 0

    # -- the checkpoint's part (flat keys, as checkpoints have always held them) ---------------

    def state_dict(self) -> dict:
        return {
            "train_seconds": self.train_seconds,
            "intervals": list(self.intervals),
            "interval_steps": self.interval_steps,
            "interval_seconds": self.interval_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.train_seconds = state.get("train_seconds", 0.0)
        self.intervals = [tuple(i) for i in state.get("intervals", [])]
        self.interval_steps = state.get("interval_steps", 0)
        self.interval_seconds = state.get("interval_seconds", 0.0)

    # -- the trainer's calls ---------------------------------------------------------------------

    def start(self) -> None:
        """Training (re)starts in this process: the first interval holds its compilation."""
        self._first = True
        self._restart()

    def step(self) -> None:
        self.interval_steps += 1

    def close(self) -> tuple[float, int, bool]:
        """End the open interval at a log line: (its seconds, its steps, whether it compiled or warmed
        up). Only an interval that did neither measures the run's speed."""
        synchronize(self.device)
        seconds = self.interval_seconds + time.perf_counter() - self._start
        steps = self.interval_steps
        self.train_seconds += seconds
        compiled = self._first or compilations() != self._compiled_before
        if not compiled:
            self.intervals.append((seconds, steps))
        self._first = False
        self.interval_steps, self.interval_seconds = 0, 0.0
        self._restart()
        return seconds, steps, compiled

    def pause(self, stopping: bool = False) -> None:
        """Stop the clock for an evaluation and a checkpoint. With `stopping` the run ends here:
        the open interval's steps, never logged, still count as training time."""
        if self.interval_steps:
            synchronize(self.device)
            self.interval_seconds += time.perf_counter() - self._start
            if stopping:
                self.train_seconds += self.interval_seconds
        self._paused_compilations = compilations()

    def resume(self) -> None:
        """Restart the clock after a pause; what compiled during it is not the interval's."""
        self._start = time.perf_counter()
        self._compiled_before += compilations() - self._paused_compilations

    def throughput(self) -> tuple[float, int]:
        """(seconds, steps) over the intervals that measure the speed; (0, 0) before any."""
        return sum(s for s, _ in self.intervals), sum(n for _, n in self.intervals)

    def _restart(self) -> None:
        self._start, self._compiled_before = time.perf_counter(), compilations()
