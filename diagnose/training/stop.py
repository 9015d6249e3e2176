"""Ctrl-C (SIGINT), a scheduler's SIGTERM and SLURM's warning before a time limit (USR2, under submitit) become a
request to stop at the next step boundary."""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequests:
    """While active, SIGINT and SIGTERM set `requested` instead of killing the process, so training can end
    between two steps and save everything. A second Ctrl-C stops at once, for the impatient; so does any signal
    inside `at_once()` (the work after training, where there is no step boundary to wait for)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    # SLURM's warning that a job's time is nearly up (or that it is preempted): submitit's handler for it requeues the
    # job at once, in the middle of a step. It is taken only where such a handler waits for it, and handed on to that
    # handler (pass_on) once the run has saved its state, so that the requeued job goes on from there.
    HANDED_ON = (signal.SIGUSR2,)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}
        self._handed_on: dict[int, Callable[[int, FrameType | None], object]] = {}
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
            for sig in self.HANDED_ON:
                if callable(handler := signal.getsignal(sig)):
                    self._handed_on[sig] = handler
                    self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (a thread-based launcher): the default handling stays
            self._previous.clear()
        return self

    def pass_on(self) -> None:
        """Hand a signal taken from another handler (submitit's requeue) to that handler, now that the run is saved."""
        signum = signal.Signals[self.requested] if self.requested else None
        if signum in self._handed_on:
            self._handed_on[signum](signum, None)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
