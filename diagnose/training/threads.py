"""How many intra-op threads a run on the CPU uses: measured on its own training step.

Torch's default (a thread per core) loses badly for small models: the threads' start and synchronisation cost
more than the arithmetic they share, and under contention (a sweep's other jobs, another user) spinning threads
slow each other several-fold (measured: a batch-2 MLP ~35x slower than one thread on a busy 2-core machine). A
CNN at a fair batch gains from every core. `threads=auto` times a few forward/backward passes of the run's own
model at its batch size with one thread and with all the threads it may use, and keeps the faster.
"""

import os
import time
from collections.abc import Callable

import torch
from torch import nn

from diagnose.models.modes import leaves_no_trace

TIMED_STEPS = 3  # after one untimed step each: enough to tell 2x apart, ~0.1 s for the default CNN
_share: int | None = None  # the threads a launcher gave this job (diagnose.cli.jobs: its share of the cores)


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


def set_threads(setting: int | str, step: Callable[[], None]) -> int:
    """Apply `threads` (a number, or auto: pick_threads on `step`); the number in use."""
    threads = pick_threads(step, most_threads()) if setting == "auto" else int(setting)
    torch.set_num_threads(threads)
    return threads


def pick_threads(step: Callable[[], None], most: int) -> int:
    """1 or `most` threads, whichever runs `step` faster (the smaller on a tie)."""
    if most <= 1:
        return 1
    timings = {}
    for threads in (1, most):
        torch.set_num_threads(threads)
        step()  # warm-up: allocations, kernel selection
        started = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step()
        timings[threads] = time.perf_counter() - started
    return min(timings, key=lambda threads: (timings[threads], threads))


def training_pass(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A forward and backward pass on (x, y) that leaves the model as it was: BN's running statistics are put back,
    the random state (dropout) is forked, and the gradients are dropped."""

    def step() -> None:
        with leaves_no_trace(model, x.device):
            loss_fn(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    return step
