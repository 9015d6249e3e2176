"""Hydra callbacks: the output folder checked before Hydra makes it, a sweep summed up at its end."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from diagnose.cli.exits import USER_ERROR_EXIT, fail
from diagnose.errors import UserError


class DiagnoseCallbacks(Callback):
    """Hydra callbacks: check the output folder before Hydra makes it, and sum a sweep up at its end."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        _check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        _check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        """In the launching process, after every job: sensitivity curves, HParams, summary.csv, table."""
        from diagnose.sweep.summary import summarise_sweep

        try:
            summarise_sweep(Path(config.hydra.sweep.dir))
        except UserError as err:  # e.g. every job failed before writing anything
            fail(f"no sweep summary: {err}")


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
