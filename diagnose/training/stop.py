"""Ctrl-C (SIGINT) and a scheduler's SIGTERM become a request to stop at the next step boundary."""

import signal
from types import FrameType


class StopRequests:
    """While active, SIGINT and SIGTERM set `requested` instead of killing the process, so training can end
    between two steps and save everything. A second Ctrl-C stops at once, for the impatient."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

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
