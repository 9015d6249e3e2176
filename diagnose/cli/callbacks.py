"""Hydra callbacks: the output folder checked before Hydra makes it, a sweep summed up at its end."""

import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from diagnose.cli.exits import EXIT_CODES, INTERNAL_ERROR_EXIT, USER_ERROR_EXIT, fail
from diagnose.cli.ownership import own, refuse_a_used_folder
from diagnose.errors import UserError
from diagnose.results import RunMetrics


class DiagnoseCallbacks(Callback):
    """Hydra callbacks: check the output folder before Hydra makes it, and sum a sweep up at its end."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        """Before Hydra writes into the run's folder: it must be writable, free, and hold no run."""
        _check_writable(config.hydra.run.dir, "hydra.run.dir")
        try:
            refuse_a_used_folder(Path(config.hydra.run.dir), "hydra.run.dir")
            own(Path(config.hydra.run.dir))
        except UserError as err:
            fail(str(err))
            sys.exit(USER_ERROR_EXIT)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        _check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        try:  # before Hydra writes its multirun.yaml there
            refuse_a_used_folder(Path(config.hydra.sweep.dir), "hydra.sweep.dir", sweep=True)
        except UserError as err:
            fail(str(err))
            sys.exit(USER_ERROR_EXIT)
        if config.hydra.launcher.get("_target_", "").endswith("submitit_launcher.SlurmLauncher"):
            _without_accounting()

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        """In the launching process, after every job: sensitivity curves, HParams, summary.csv, table."""
        from diagnose.sweep.summary import summarise_sweep

        if config.hydra.job.name == "check":  # its jobs leave check.json, not runs to sum up
            from diagnose.check import sweep_outcome as checks_outcome

            SWEEP.update(zip(("code", "message"), checks_outcome(Path(config.hydra.sweep.dir)), strict=True))
            return
        try:
            runs = summarise_sweep(Path(config.hydra.sweep.dir))
        except UserError as err:  # e.g. every job failed before writing anything
            fail(f"no sweep summary: {err}")
            SWEEP.update(code=USER_ERROR_EXIT, message="")
            return
        SWEEP.update(zip(("code", "message"), sweep_outcome([run.metrics for run in runs]), strict=True))


# What the sweep that just ended in this process comes to: its exit code and the line that says why
SWEEP: dict[str, object] = {"code": 0, "message": ""}


def sweep_outcome(jobs: list[RunMetrics]) -> tuple[int, str]:
    """The exit code of a sweep (its worst job: an internal error, then a user error, then a divergence, then an
    interruption: a SLURM job stopped at its time limit and not requeued) and the line that counts them; (0, "")
    when every job completed."""
    internal = sum(m.status == "failed" and m.error_kind != "user" for m in jobs)
    user = sum(m.status == "failed" and m.error_kind == "user" for m in jobs)
    diverged = sum(m.status == "diverged" for m in jobs)
    interrupted = sum(m.status == "interrupted" for m in jobs)
    if not internal + user + diverged + interrupted:
        return 0, ""
    counts = [f"{n} {what}" for n, what in ((internal, "failed on an internal error"),
                                            (user, "failed on a user error"), (diverged, "diverged"),
                                            (interrupted, "interrupted (resume= goes on with each)")) if n]
    code = (INTERNAL_ERROR_EXIT if internal else USER_ERROR_EXIT if user else
            EXIT_CODES["diverged"] if diverged else EXIT_CODES["interrupted"])
    return code, f"{' and '.join(counts)} of the sweep's {len(jobs)} jobs (see its table above and summary.csv)."


def _check_writable(folder: str, key: str) -> None:
    """Hydra would fail to make an unwritable output folder with a traceback; say it in one paragraph."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".diagnose-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        fail(f"cannot write the run's output folder {path} ({err.strerror}). Run from a folder you can write "
             f"to, or set {key}=<a writable folder>.")
        sys.exit(USER_ERROR_EXIT)


def _without_accounting() -> None:
    """submitit asks sacct for its SLURM jobs' states every few seconds; where the cluster keeps no accounting (as on
    many small ones) every call fails and prints two lines of warning and sacct's own complaint. Said once here,
    and the calls left out: submitit then knows a job has ended by its result file, as it does when sacct fails."""
    try:
        subprocess.run(["sacct", "--noheader", "--jobs=1", "--format=JobID"], capture_output=True, text=True,
                       check=True, timeout=60)
        return
    except (OSError, subprocess.SubprocessError) as err:
        why = (getattr(err, "stderr", None) or str(err)).strip()
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher.update = lambda: None  # the launcher's own watcher, shared by its jobs
    from diagnose.console import console

    # the terminal only: Hydra's logging would print it a second time in the launching process
    console.print(f"SLURM keeps no job accounting here (sacct: {why}): submitit follows the jobs by their result "
                  f"files.", highlight=False, soft_wrap=True)
