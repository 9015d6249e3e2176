"""`hydra/launcher=local`: a sweep's jobs side by side on this machine, each in a worker process with its share of
the cores and, on a machine with GPUs, its share of a device (several tiny jobs fill a GPU that one leaves idle).

Why not joblib: its workers are fresh interpreters that import torch, Hydra and diagnose again (~3 s each on 2 cores,
taken from the jobs) and get the launch context pickled with every job. Here the workers are forked from the launching
process, which has imported all of that already, so a worker starts in milliseconds. The launching process counts the
GPUs through NVML and never initialises CUDA itself (a CUDA context does not survive a fork); each worker sees only its
own device (CUDA_VISIBLE_DEVICES), as cuda:0. Fork is Linux's: elsewhere the launcher says to use joblib. (A process
that had run multi-threaded torch work before forking would hang its workers' threads: the launching process does
none, it only composes configs.)

This module is imported whenever Hydra starts (it scans hydra_plugins for launchers): it imports nothing heavy. Its
config, `hydra/launcher=local`, is registered with diagnose's schema (diagnose/cli/schema.py): Hydra's scan loads this
module a second time, and a config class defined here would then not be the one its saved configs pickle by name.
"""

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# what runs in a worker lives in diagnose: Hydra's plugin scan loads this module again in every process that starts
# Hydra, a job's included, and a worker's state kept here would be lost with it
from diagnose.cli.workers import run_one, worker_starts

log = logging.getLogger(__name__)


class LocalLauncher(Launcher):
    def __init__(self, workers: int = 0, workers_per_device: int = 4) -> None:
        from diagnose import checks
        from diagnose.cli.schema import LAUNCHER_LEAST

        for key, value in (("workers", workers), ("workers_per_device", workers_per_device)):
            checks.whole(f"hydra.launcher.{key}", value, minimum=LAUNCHER_LEAST[key])
        self.workers, self.workers_per_device = workers, workers_per_device

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        context = forking()
        devices = visible_gpus()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = self.workers or (self.workers_per_device * len(devices) if devices else cores)
        workers = max(1, min(workers, len(job_overrides)))
        threads = max(1, cores // workers)
        log.info(f"Launching {len(job_overrides)} jobs, {workers} at a time with {threads} threads each"
                 + (f" on GPUs {','.join(devices)}" if devices else ""))
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        launch = (self.hydra_context, self.config, self.task_function, Singleton.get_state())  # inherited, not sent
        slots = context.Value("i", 0)  # each worker takes the next slot number: its device
        pids = context.Array("i", workers)  # each worker's process id, at its slot: to pass a stop on
        stopping = context.Event()  # set: a job that has not started yet does not start (the pool queues a few ahead)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=worker_starts,
                                 initargs=(launch, slots, pids, threads, devices, stopping)) as pool:
            jobs = [pool.submit(run_one, initial_job_idx + idx, list(overrides))
                    for idx, overrides in enumerate(job_overrides)]
            return _results(jobs, pool, pids, stopping)


def forking() -> Any:
    """The fork start method, where it is safe: Linux, and CUDA not initialised in this process."""
    import torch

    from diagnose.errors import UserError

    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform != "linux":
        raise UserError("hydra/launcher=local forks its workers, which is safe on Linux only (macOS's frameworks are "
                        "not fork-safe; Windows cannot fork). Use hydra/launcher=joblib here.")
    if torch.cuda.is_initialized():
        raise UserError("hydra/launcher=local cannot fork workers from a process that has initialised CUDA. Use "
                        "hydra/launcher=joblib.")
    return multiprocessing.get_context("fork")


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as a worker's CUDA_VISIBLE_DEVICES names them, counted through NVML
    alone: CUDA's own count would initialise the driver here, and a forked worker could not use CUDA then. Where
    NVML does not answer, none: the workers fork all the same, and each job finds its device itself."""
    import torch

    count_by_nvml = getattr(torch.cuda, "_device_count_nvml", None)
    count = count_by_nvml() if torch.backends.cuda.is_built() and count_by_nvml is not None else 0
    if count <= 0:
        return []
    visible = [name.strip() for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name.strip()]
    return (visible or [str(i) for i in range(count)])[:count]


def _results(jobs: list[Future], pool: ProcessPoolExecutor, pids: Any, stopping: Any) -> list[JobReturn]:
    """Every job's result, in order. A stop ends the sweep as it would under the basic launcher — no other job
    starts, the running ones stop at their next step and save: Ctrl-C or SIGTERM to this process (passed on to the
    workers as SIGTERM, which a job takes as a request to stop and an idle worker ignores), or a job that exits
    because it was told to stop (seen as soon as it happens, not in the jobs' order)."""

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        done, pending = wait(jobs, return_when=FIRST_EXCEPTION)
        if pending:  # a job raised: a SystemExit is one that was stopped
            raise next(job.exception() for job in done if job.exception() is not None)
        return [job.result() for job in jobs]
    except BaseException as stop:
        stopping.set()
        for pid in pids:
            with suppress(ProcessLookupError):
                if pid:
                    os.kill(pid, signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)
        if not isinstance(stop, KeyboardInterrupt):
            raise
        from diagnose.cli.exits import EXIT_CODES
        from diagnose.console import say

        say("Interrupted: the running jobs stopped and saved (resume= goes on with each); the others did not start.",
            "yellow")
        raise SystemExit(EXIT_CODES["interrupted"]) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
