"""One Hydra job of `train` or `probe`: the work, with the error handling and exit codes a user expects."""

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from diagnose.cli.exits import EXIT_CODES, USER_ERROR_EXIT, fail
from diagnose.errors import UserError
from diagnose.results import RunMetrics


def _run_task(cfg: DictConfig, work: Callable[[DictConfig, Path], RunMetrics]) -> float | None:
    """Run `work(cfg, out_dir)` as one Hydra job, with the error handling a user expects of it."""
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            metrics = work(cfg, out_dir)
        except UserError as err:
            fail(str(err))
            _remove_run_dir(out_dir)  # nothing was made: leave no half-made run behind
            sys.exit(USER_ERROR_EXIT)
        except KeyboardInterrupt:  # Ctrl-C outside the training steps, which handle it themselves
            fail("interrupted.")
            _remove_run_dir(out_dir)
            sys.exit(EXIT_CODES["interrupted"])
        if metrics.status != "completed":
            sys.exit(EXIT_CODES[metrics.status])
        return metrics.final.val_acc

    # In a sweep one job's failure must not stop the others (Hydra aborts the sweep on an exception): the
    # job's folder records why it failed, and the sweep summary lists it.
    _share_cores(hydra_cfg)
    try:
        metrics = work(cfg, out_dir)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, whatever its kind
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        fail(f"job {out_dir.name} failed: {message}")
        if not isinstance(err, UserError):
            logging.getLogger(__name__).exception("job %s failed", out_dir.name)  # the traceback, in the job log
        from diagnose.training.outputs import write_metrics

        config = OmegaConf.to_container(cfg, resolve=True)
        write_metrics(out_dir, RunMetrics(status="failed", error=message, config=config))
        return None
    if metrics.status == "interrupted":  # Ctrl-C or SIGTERM stops the whole sweep, not just this job
        sys.exit(EXIT_CODES["interrupted"])
    return metrics.final.val_acc


def train_job(cfg: DictConfig) -> float | None:
    def work(cfg: DictConfig, out_dir: Path) -> RunMetrics:
        from diagnose.build import build_run
        from diagnose.config import from_dict, to_dict
        from diagnose.console import print_summary
        from diagnose.training.loop import train

        if cfg.resume is None:
            config = OmegaConf.to_object(cfg)  # checked against the schema, ranges included
            metrics = train(build_run(config), out_dir, to_dict(config))
        else:
            checkpoint, run_dir = resumable(cfg, list(HydraConfig.get().overrides.task))
            metrics = train(build_run(from_dict(checkpoint["config"])), run_dir, checkpoint["config"],
                            resume=checkpoint)
            _remove_run_dir(out_dir)  # the folder Hydra made for this command: the run goes on in its own
            out_dir = run_dir
        print_summary(metrics, str(out_dir))
        return metrics

    return _run_task(cfg, work)


def probe_job(cfg: DictConfig) -> None:
    from diagnose.probe import probe

    _run_task(cfg, lambda cfg, out_dir: probe(OmegaConf.to_object(cfg), out_dir))


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
        if key == "resume" or key.startswith("hydra"):
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
    from diagnose.training.outputs import read_metrics

    try:
        return read_metrics(run_dir).status
    except (OSError, ValueError, TypeError):  # no metrics.json: killed outright, resumable from its last checkpoint
        return None


def _share_cores(hydra_cfg: DictConfig) -> None:
    """Jobs running side by side (joblib) each get their share of the cores: two torch processes that each
    spin up every core's worth of threads slow each other down several-fold."""
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if n_jobs:
        import torch

        cores = os.cpu_count() or 1
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        torch.set_num_threads(max(1, cores // parallel))


def _remove_run_dir(out_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra put there (its config and log): a failure before
    anything was made. A folder with results in it is kept, whatever happened."""
    made = [p for p in out_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]
    if made:
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in out_dir.resolve().parents:  # outputs/<date> and outputs/, made for it, when now empty
        if parent == cwd or not parent.is_relative_to(cwd) or any(parent.iterdir()):
            break
        parent.rmdir()
