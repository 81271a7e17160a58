"""SIGINT and SIGTERM for the whole life of a run, so a stop request is acted on in every phase.

Between training steps a request is a flag the loop reads: the step in progress finishes, then a
checkpoint is written and the run ends (ranks agree on it, so no collective is left waiting).
Evaluation reads the flag between batches and is abandoned, never logged. Phases that hold no
collective (the after-training measurements, the sample) run inside `immediate()`: there the
request raises `StopRequested` at once, which no `except Exception` swallows. Data preparation
runs wholly so (`stop_at_once`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger("train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):  # noqa: N818 (like KeyboardInterrupt: not an error)
    """A stop request (SIGINT/SIGTERM) inside a phase that ends at once."""


class Stop:
    """The process's stop request: which signal came (None: none), and how to act on it."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._immediate = False
        self._previous: dict = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on (until `uninstall`); a new run starts unsignalled."""
        self.signal, self._immediate = None, False
        if not self._previous:
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def request(self, name: str) -> None:
        """Record a request made elsewhere (a peer rank's signal)."""
        self.signal = self.signal or name

    def _handle(self, signum: int, _frame) -> None:
        first = self.signal is None
        self.signal = signal.Signals(signum).name
        if self._immediate:
            raise StopRequested(self.signal)
        if first:
            log.warning("%s received: stopping with a checkpoint (after the step in progress)", self.signal)

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """A phase a request ends at once (StopRequested), also one that came before it began."""
        before, self._immediate = self._immediate, True
        try:
            if self.signal is not None:
                raise StopRequested(self.signal)
            yield
        finally:
            self._immediate = before


STOP = Stop()


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
    """For work that is one phase a stop request ends at once (data preparation, whose writes are
    temporary files moved into place when whole): SIGINT and SIGTERM raise StopRequested inside, so
    the temporary files are removed on the way out; the caller says so and exits 130."""
    STOP.install()
    try:
        with STOP.immediate():
            yield
    finally:
        STOP.uninstall()
