"""How many intra-op threads a run on the CPU uses: measured on its own training step, at start-up and again while it
trains.

Torch's default (a thread per core) loses badly for small models: the threads' start and synchronisation cost more
than the arithmetic they share, and under contention (a sweep's other jobs, another user) spinning threads slow each
other several-fold (measured: a batch-2 MLP ~35x slower than one thread on a busy 2-core machine). A CNN at a fair
batch gains from every core. `threads=auto` times the run's own step with one thread and with all the threads it may
use, alternating step by step and comparing the medians (a moment's load slows both alike, and the one step it hits
is outvoted), and starts with the faster. Which is faster changes with the load (another job starts or ends), so
every RECHECK_S seconds of training or more it times a few of the run's own steps the same way, and switches when the
other count is clearly faster. Those steps cost what the slower count loses on them (with another job spinning on
one of two cores, 2 threads ran the default CNN 3-7x slower than 1), so the re-checks are spaced to keep that under
BUDGET of the training time. On the CPU a step is over when its Python call returns: the host clock times it, no
sync.
"""

import logging
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from diagnose.models.modes import leaves_no_trace

TRIAL_STEPS = 3  # steps timed with each count, alternating: ~0.2 s for the default CNN; the median outvotes one
RECHECK_S = 5.0  # seconds between re-checks at least: where the load changes, auto follows within about this
BUDGET = 0.03  # ... and more where needed to keep what a re-check's slower steps lose under 3 % of the time between
MARGIN = 0.9  # a re-check switches when the other count's median step takes under 90 % of the current one's
_share: int | None = None  # the threads a launcher gave this job (diagnose.cli.jobs: its share of the cores)
_log = logging.getLogger("diagnose")  # the run's train.log: a switch is a line there, not on the terminal


def share_cores(threads: int) -> None:
    """A launcher running jobs side by side gives each this many threads at most."""
    global _share
    _share = threads
    torch.set_num_threads(threads)


def most_threads() -> int:
    """The threads this process may use: a launcher's share, else OMP_NUM_THREADS where set (a cluster's or a
    user's allocation), else the cores it may run on."""
    if _share is not None:
        return _share
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(int(os.environ["OMP_NUM_THREADS"]), 1)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_threads(step: Callable[[], None], most: int) -> int:
    """1 or `most` threads, whichever runs `step` faster (the smaller on a tie), timed alternately."""
    return _timed_pick(step, most)[0] if most > 1 else 1


def _timed_pick(step: Callable[[], None], most: int) -> tuple[int, dict[int, float]]:
    """pick_threads, and the median seconds of `step` with each count."""
    for threads in (1, most):  # warm-up: allocations, kernel selection
        torch.set_num_threads(threads)
        step()
    times: dict[int, list[float]] = {1: [], most: []}
    for _ in range(TRIAL_STEPS):
        for threads in (1, most):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            step()
            times[threads].append(time.perf_counter() - started)
    medians = {threads: statistics.median(seconds) for threads, seconds in times.items()}
    return (most if medians[most] < medians[1] else 1), medians


def _interval(medians: dict[int, float]) -> float:
    """Seconds from one re-check to the next: RECHECK_S, or more where the slower count's steps lose much."""
    return max(RECHECK_S, TRIAL_STEPS * (max(medians.values()) - min(medians.values())) / BUDGET)


class Threads:
    """The CPU threads a run trains with: a fixed number, or threads=auto's pick, re-checked while it trains."""

    def __init__(self, setting: int | str, step: Callable[[], None]):
        """`step`: a training pass that leaves the model as it was (training_pass), for auto's first pick."""
        most = most_threads()
        self.auto = setting == "auto" and most > 1
        self.counts = (1, most)
        self.current, self._every = int(1 if setting == "auto" else setting), RECHECK_S
        if self.auto:
            self.current, medians = _timed_pick(step, most)
            self._every = _interval(medians)
        torch.set_num_threads(self.current)
        self._trial: list[int] = []  # the counts of a re-check's steps still to run
        self._times: dict[int, list[float]] = {}  # count -> seconds of each of its steps in this re-check
        self._running: tuple[int, float] | None = None  # a re-check's step in progress: its count and start
        self._next_check: float | None = None  # when the next re-check starts; the clock starts at the first step

    def before_step(self, step: int, used: list[list[int]]) -> None:
        """Called as each training step starts: set its thread count, and append [step, count] to `used` where the
        chosen count changes (the re-checks' own steps are not listed)."""
        if self.auto:
            self._recheck(time.perf_counter(), step)
        if not used or used[-1][1] != self.current:
            used.append([step, self.current])

    def _recheck(self, now: float, step: int) -> None:
        if self._running is not None:  # the step that just ended was timed
            count, started = self._running
            self._times[count].append(now - started)
            self._running = None
            if not self._trial:  # the re-check is complete
                self.current = self._decide(step)
                torch.set_num_threads(self.current)
                self._next_check = now + self._every
        if self._next_check is None:
            self._next_check = now + self._every
        if not self._trial and now >= self._next_check:
            other = self.counts[1] if self.current == self.counts[0] else self.counts[0]
            self._trial = [other, self.current] * TRIAL_STEPS  # alternating: a change of load hits both alike
            self._times = {other: [], self.current: []}
        if self._trial:
            count = self._trial.pop(0)
            torch.set_num_threads(count)
            self._running = (count, now)

    def _decide(self, step: int) -> int:
        """The other count where its median step is clearly faster, else the current one."""
        (other,) = set(self._times) - {self.current}
        medians = {threads: statistics.median(seconds) for threads, seconds in self._times.items()}
        self._every = _interval(medians)
        other_s, current_s = medians[other], medians[self.current]
        if other_s >= MARGIN * current_s:
            return self.current
        _log.info(f"threads=auto: {other} from step {step}, a step took {1e3 * other_s:.1f} ms with {other} and "
                  f"{1e3 * current_s:.1f} ms with {self.current}")
        return other


def training_pass(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A forward and backward pass on (x, y) that leaves the model as it was: BN's running statistics are put back,
    the random state (dropout) is forked, and the gradients are dropped."""

    def step() -> None:
        with leaves_no_trace(model, x.device):
            loss_fn(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    return step
