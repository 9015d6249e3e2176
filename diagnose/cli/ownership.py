"""A run folder has one owner: the diagnose process that writes it holds an OS lock on it for its whole life."""

import os
from pathlib import Path
from typing import IO

from diagnose.errors import UserError

LOCK_FILE = ".diagnose.lock"  # holds the owner's pid
RESULTS = ("metrics.json", "checkpoint.pt")

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


def refuse_a_finished_run(folder: Path, key: str) -> None:
    """A new run never writes over one that finished or was interrupted (resume= goes on with that one)."""
    found = [name for name in RESULTS if (Path(folder) / name).exists()]
    if found:
        raise UserError(f"{key}={folder} already holds a run ({', '.join(found)}): a new run would overwrite it. Give "
                        f"another folder, or resume={folder} to go on with that run if it was interrupted.")
