"""What a worker of the `local` launcher (hydra_plugins/diagnose_launcher) does: take the launch context, its share
of the cores and its GPU once, then run jobs as Hydra's own launchers run them."""

import ctypes
import os
import signal
from contextlib import suppress
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

_LAUNCH: tuple[HydraContext, DictConfig, TaskFunction, dict[Any, Any]] | None = None  # a worker's launch context
_STOPPING: Any = None  # the launcher's event: set, the sweep is ending and a job not yet started does not start


def worker_starts(launch: tuple, slots: Any, pids: Any, threads: int, devices: list[str], stopping: Any) -> None:
    """A worker: the launch context, its share of the cores, its GPU. Ctrl-C reaches every process of the terminal,
    and the launcher passes a stop on as SIGTERM: an idle worker ignores both (the launcher ends the sweep); a job's
    own handler takes over while it runs. Should the launcher die without a word (SIGKILL), the worker dies with
    it, as a job run by the basic launcher would."""
    global _LAUNCH, _STOPPING
    _LAUNCH, _STOPPING = launch, stopping
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with suppress(OSError, AttributeError):  # Linux's prctl(PR_SET_PDEATHSIG, SIGKILL)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    with slots.get_lock():
        slot, slots.value = slots.value, slots.value + 1
    pids[slot] = os.getpid()
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    from diagnose.training.threads import share_cores

    share_cores(threads)


def run_one(idx: int, overrides: list[str]) -> JobReturn | None:
    """One job in a worker, as Hydra's own launchers run it; None: the sweep was ending, it did not start."""
    assert _LAUNCH is not None, "worker_starts runs first in every worker"
    if _STOPPING.is_set():
        return None
    hydra_context, config, task_function, singletons = _LAUNCH
    setup_globals()
    Singleton.set_state(singletons)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    from hydra.core.hydra_config import HydraConfig

    from diagnose.console import side_by_side

    HydraConfig.instance().set_config(sweep_config)
    side_by_side(str(sweep_config.hydra.job.override_dirname))  # the job's folder name: batch=4,norm=gn
    done = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    # what the sweeper reads (its return value, status, folder) goes back; its configs stay in the job's folder: Hydra
    # loads its own config classes twice (its plugin scan), so they do not pickle
    done.cfg = done.hydra_cfg = None
    return done
