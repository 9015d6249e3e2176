"""Ctrl-C (SIGINT) and a scheduler's SIGTERM become a request to stop at the next step boundary."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequests:
    """While active, SIGINT and SIGTERM set `requested` instead of killing the process, so training can end
    between two steps and save everything. A second Ctrl-C stops at once, for the impatient; so does any signal
    inside `at_once()` (the work after training, where there is no step boundary to wait for)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}
        self._at_once = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.requested is None
        self.requested = self.requested or signal.Signals(signum).name
        if self._at_once or (not first and signum == signal.SIGINT):
            raise KeyboardInterrupt

    @contextmanager
    def at_once(self) -> Iterator[None]:
        """A signal raises KeyboardInterrupt at once; one that came before raises it on entry."""
        self._at_once = True
        try:
            if self.requested:
                raise KeyboardInterrupt
            yield
        finally:
            self._at_once = False

    def __enter__(self) -> "StopRequests":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (a thread-based launcher): the default handling stays
            self._previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
