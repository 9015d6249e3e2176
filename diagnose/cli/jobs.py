"""One Hydra job of `train` or `probe`: the work, with the error handling and exit codes a user expects."""

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from diagnose.cli.exits import EXIT_CODES, INTERNAL_ERROR_EXIT, USER_ERROR_EXIT, fail
from diagnose.cli.interrupts import at_once
from diagnose.cli.ownership import LOCK_FILE, own, release
from diagnose.errors import UserError
from diagnose.results import RunMetrics


@dataclass
class Job:
    """Where a job's run lives: the folder Hydra made for it, or, once the job goes on with an earlier run
    (resume=), that run's folder, which an error is then recorded in and said of."""

    out_dir: Path
    sweep: bool
    not_requeued: bool = False  # SLURM stopped the job and submitit did not requeue it: the sweep's others go on


def _run_task(cfg: DictConfig, work: Callable[[DictConfig, Job], RunMetrics]) -> float | None:
    """Run `work(cfg, job)` as one Hydra job, with the error handling a user expects of it."""
    hydra_cfg = HydraConfig.get()
    job = Job(Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN)
    if job.sweep:
        _share_cores(hydra_cfg)
    try:
        own(job.out_dir)  # a single run's folder is owned from before Hydra wrote into it (callbacks.on_run_start)
        metrics = work(cfg, job)
    except KeyboardInterrupt:  # before training began (training handles its own): nothing to keep
        fail("interrupted before training began.")
        _remove_run_dir(job.out_dir)
        sys.exit(EXIT_CODES["interrupted"])
    except Exception as err:  # noqa: BLE001 - a user's mistake or a bug: each is recorded and said
        # in a sweep one job's failure must not stop the others (Hydra aborts a sweep on an exception): the
        # job's folder records why it failed, and the sweep summary lists it
        code = _failed(err, cfg, job.out_dir, job.sweep, hydra_cfg.job.name)
        if job.sweep:
            return None
        sys.exit(code)
    if (metrics.status == "interrupted" and not job.not_requeued) or (not job.sweep and metrics.status != "completed"):
        sys.exit(EXIT_CODES[metrics.status])  # an interruption stops the whole sweep, not just this job
    return metrics.final.val_acc


def _failed(err: Exception, cfg: DictConfig, out_dir: Path, sweep: bool, command: str = "train") -> int:
    """Say why a run of `command` failed, in one paragraph, record it in its metrics.json; the exit code."""
    from diagnose.files import METRICS_FILE, write_metrics

    whose = f"job {out_dir.name} failed: " if sweep else ""
    if isinstance(err, UserError):
        fail(f"{whose}{err}")
        kind, message, code = "user", str(err), USER_ERROR_EXIT
        if not sweep:
            _remove_run_dir(out_dir)  # nothing was made: leave no half-made run behind
            return code
    else:
        logging.getLogger("diagnose").exception("internal error")  # the traceback, into the run's train.log
        kind, message, code = "internal", f"{type(err).__name__}: {err}", INTERNAL_ERROR_EXIT
        # only training saves a state to go on from
        kept = (f"; a checkpoint in that folder, if the run got one, is kept (resume={out_dir} goes on from it)"
                if command == "train" else "")
        fail(f"{whose}internal error, a bug in diagnose rather than in the command line: {message}. The traceback is "
             f"in {out_dir / f'{command}.log'}{kept}. Please report it with that log.")
    if not (out_dir / METRICS_FILE).exists() or sweep:
        config = OmegaConf.to_container(cfg, resolve=True)
        write_metrics(out_dir, RunMetrics(status="failed", error=message, error_kind=kind, config=config,
                                          command=command))
    return code


def train_job(cfg: DictConfig) -> float | None:
    def work(cfg: DictConfig, job: Job) -> RunMetrics:
        from diagnose.build import build_run
        from diagnose.config import from_dict, to_dict
        from diagnose.console import print_summary, say
        from diagnose.training.loop import train
        from diagnose.training.outputs import log_into
        from diagnose.training.stop import StopRequests

        with StopRequests() as stop:  # from before the data loads: a signal at any moment stops cleanly
            if cfg.resume is not None:
                checkpoint, run_dir = resumable(cfg, list(HydraConfig.get().overrides.task))
                own(run_dir)  # refused while that run is still training
                log_into(run_dir)  # the run's train.log goes on where it stopped
                _remove_run_dir(job.out_dir)  # the folder Hydra made for this command: the run goes on in its own
                job.out_dir = run_dir
            elif (checkpoint := requeued(job.out_dir)) is not None:
                say(f"requeued by SLURM: going on from step {checkpoint['step']}, the checkpoint in {job.out_dir}.")
            if checkpoint is None:  # a new run
                config = OmegaConf.to_object(cfg)  # checked against the schema, ranges included
                metrics = train(build_run(config), job.out_dir, to_dict(config), stop=stop)
            else:
                metrics = train(build_run(from_dict(checkpoint["config"])), job.out_dir, checkpoint["config"],
                                resume=checkpoint, stop=stop)
        print_summary(metrics, str(job.out_dir))
        try:
            stop.pass_on()  # under submitit, SLURM's USR2 requeues the job now that its state is saved
        except Exception as err:  # noqa: BLE001 - submitit's refusal (its count of time limits reached), or its bug
            job.not_requeued = True
            fail(f"job {job.out_dir.name}: SLURM stopped it ({stop.requested}) and it was not requeued ({err}). Its "
                 f"state is saved: resume={job.out_dir} goes on from it.")
        return metrics

    return _run_task(cfg, work)


def requeued(out_dir: Path) -> dict | None:
    """The checkpoint a SLURM job that was requeued (its time limit reached, preempted) goes on from: the one it saved
    in its own folder before it stopped. submitit brings a requeued job back with the same Hydra job, folder
    included; SLURM counts its restarts. None at a job's first start, and for one stopped before its first
    checkpoint, which starts again."""
    from diagnose.files import CHECKPOINT_FILE
    from diagnose.training.outputs import load_checkpoint

    if os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0") or not (out_dir / CHECKPOINT_FILE).exists():
        return None
    return load_checkpoint(out_dir)


def check_job(cfg: DictConfig) -> None:
    from diagnose.check import check

    def work(cfg: DictConfig, job: Job) -> RunMetrics:
        found = check(OmegaConf.to_object(cfg), job.out_dir)
        return RunMetrics(status="failed" if any(c.verdict == "fail" for c in found) else "completed",
                          command="check")

    _run_task(cfg, at_once(work, "check"))


def probe_job(cfg: DictConfig) -> None:
    from diagnose.probe import probe

    _run_task(cfg, at_once(lambda cfg, job: probe(OmegaConf.to_object(cfg), job.out_dir), "probe"))


def resumable(cfg: DictConfig, command_line: list[str]) -> tuple[dict, Path]:
    """The checkpoint to resume and its folder, once it is known that the command line's overrides do not ask for a
    different run than the checkpoint's: resuming continues a run exactly as it was configured."""
    from diagnose.training.outputs import load_checkpoint

    run_dir = Path(cfg.resume)
    checkpoint = load_checkpoint(run_dir)
    saved = OmegaConf.create(checkpoint["config"])
    overrides = OverridesParser.create().parse_overrides(command_line)
    different = []
    for override in overrides:
        key = override.key_or_group
        if key == "resume" or override.is_hydra_override():
            continue
        given, before = _plain(OmegaConf.select(cfg, key)), _plain(OmegaConf.select(saved, key))
        if given != before:
            different.append(f"{key} (the run has {before}, the command line {given})")
    if different:
        raise UserError(f"resume={run_dir} continues that run as it was configured, but the command line changes "
                        f"{'; '.join(different)}. Drop those overrides, or start a new run.")
    status = _status_of(run_dir)
    if status in ("completed", "diverged"):
        raise UserError(f"resume={run_dir}: that run {status} ({checkpoint['step']} steps); only an interrupted "
                        f"run can be resumed. Start a new run (after a divergence: with a lower lr).")
    return checkpoint, run_dir


def _plain(value: object) -> object:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _status_of(run_dir: Path) -> str | None:
    from diagnose.files import read_metrics

    try:
        return read_metrics(run_dir).status
    except (OSError, ValueError, TypeError):  # no metrics.json: killed outright, resumable from its last checkpoint
        return None


def _share_cores(hydra_cfg: DictConfig) -> None:
    """Jobs running side by side (joblib) each get their share of the cores: two torch processes that each
    spin up every core's worth of threads slow each other down several-fold."""
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if n_jobs:
        from diagnose.training.threads import share_cores

        cores = os.cpu_count() or 1
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        share_cores(max(1, cores // parallel))  # threads=auto then picks 1 or this


def _remove_run_dir(out_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra put there (its config and log): a failure before
    anything was made. A folder with results in it is kept, whatever happened."""
    made = [p for p in out_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
            and p.name != LOCK_FILE]
    if made:
        return
    release(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in out_dir.resolve().parents:  # outputs/<date> and outputs/, made for it, when now empty
        if parent == cwd or not parent.is_relative_to(cwd) or any(parent.iterdir()):
            break
        parent.rmdir()
