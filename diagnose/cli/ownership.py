"""A run folder has one owner: the diagnose process that writes it holds an OS lock on it for its whole life."""

import os
from pathlib import Path
from typing import IO

from diagnose.errors import UserError
from diagnose.files import SWEEP_MARKS

LOCK_FILE = ".diagnose.lock"  # holds the owner's pid
RESULTS = ("metrics.json", "checkpoint.pt", "check.json")  # a run's or a probe's, a check's

_held: dict[Path, IO[str]] = {}  # folder -> its open lock file: the OS drops the lock when the process ends


def own(folder: Path) -> None:
    """Take `folder` for this process until it ends (however it ends: the OS releases the lock of a killed process
    too); refuse it while another live process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock, as before
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - kept open on purpose: the open file is the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{folder} is in use by another diagnose process (pid {owner}), which is still running: two "
                        f"runs in one folder would overwrite each other. Wait for it to end, or give another folder "
                        f"(hydra.run.dir=...).") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[folder] = handle


def release(folder: Path) -> None:
    handle = _held.pop(Path(folder).resolve(), None)
    if handle is not None:
        handle.close()


def refuse_a_used_folder(folder: Path, key: str, *, sweep: bool = False) -> None:
    """A folder that holds a run or a sweep is never written into by another command, sweep or single run: a new
    run would overwrite the old one's results, a sweep its jobs' (and mix both into one summary.csv). `sweep`: the
    folder is for a sweep, which must not land on a sweep's job folders either."""
    folder = Path(folder)
    marks = [name for name in SWEEP_MARKS if (folder / name).exists()]
    results = [name for name in RESULTS if (folder / name).exists()]
    jobs = sorted({p.parent.name for name in RESULTS for p in folder.glob(f"*/{name}")}) if sweep else []
    if marks or jobs:
        held = ", ".join(marks) or f"the jobs {', '.join(jobs[:3])}{', ...' if len(jobs) > 3 else ''}"
        raise UserError(f"{key}={folder} already holds a sweep ({held}): another {'sweep' if sweep else 'run'} "
                        f"written into it would overwrite its results and hide among its jobs. Give another folder, "
                        f"or leave {key} out (each command gets a folder of its own).")
    if results:
        raise UserError(f"{key}={folder} already holds a run ({', '.join(results)}): a new "
                        f"{'sweep' if sweep else 'run'} would overwrite it. Give another folder, or resume={folder} to "
                        f"go on with that run if it was interrupted.")
