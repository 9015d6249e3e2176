"""A run folder's files, written whole: through a temp file renamed into place, with the permissions of any other
output. metrics.json is read and written here, by training, a probe and a watched loop alike."""

import errno
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from diagnose.errors import UserError
from diagnose.results import RunMetrics

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_CSV = "summary.csv"  # a sweep folder's table of its jobs (diagnose.sweep.summary)
FINDINGS_JSON = "findings.json"
# a folder that holds a sweep: Hydra writes the first as the sweep starts, diagnose the second when it ends
SWEEP_MARKS = ("multirun.yaml", SUMMARY_CSV)

# What the machine, not the code, got wrong when a write fails: the user can fix it
ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class WriteError(UserError):
    """A file could not be written: the disk is full, read-only, or the folder not ours."""


def write_error(err: OSError, folder: Path) -> WriteError | OSError:
    """A failed write said in one paragraph where the environment is to blame; the error itself otherwise."""
    if err.errno not in ENVIRONMENT:
        return err
    if (folder / CHECKPOINT_FILE).exists():
        then = (f"what it saved before stays readable, its last checkpoint among it. Free space or fix the folder's "
                f"permissions, then resume={folder} goes on from that checkpoint.")
    else:
        then = "it had not saved a checkpoint yet. Free space or fix the folder's permissions and start it again."
    return WriteError(f"cannot write into {folder}: {err.strerror}. The run stopped; {then}")


def quiet_write_errors_in_threads() -> None:
    """TensorBoard's writer thread is often the first to find the disk full. The main thread gets the same error
    at its next write and says it in one paragraph, so the thread's traceback goes to the log, not the terminal."""
    threading.excepthook = _log_write_error


def _log_write_error(args: threading.ExceptHookArgs) -> None:
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in ENVIRONMENT:
        logging.getLogger("diagnose").debug("a write in a background thread failed", exc_info=args.exc_value)
    else:
        threading.__excepthook__(args)


def umask_permissions(path: str | Path) -> None:
    """Give a file the permissions the process umask gives new files (mkstemp makes temp files 0600: another
    user's `diagnose report` could not read them)."""
    current = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(current)
    os.chmod(path, 0o666 & ~current)


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temp file in the same folder, then rename: a crash never leaves half a file. Temp files left
    by a process killed while writing `path` are removed first (a run folder has one owner: diagnose.cli.lock)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(err, path.parent) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask_permissions(tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(err, path.parent) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics(out_dir: Path, metrics: RunMetrics) -> Path:
    path = out_dir / METRICS_FILE
    replace_atomically(path, lambda f: f.write(json.dumps(metrics.to_json(), indent=2, allow_nan=False).encode()))
    return path


def read_metrics(run_dir: Path) -> RunMetrics:
    return RunMetrics.from_json(json.loads((run_dir / METRICS_FILE).read_text()))
