"""Files written whole: through a temp file renamed into place, with the permissions of any other output."""

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from diagnose.errors import UserError

# What the machine, not the code, got wrong when a write fails: the user can fix it
ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class WriteError(UserError):
    """A file could not be written: the disk is full, read-only, or the folder not ours."""


def write_error(err: OSError, folder: Path) -> WriteError | OSError:
    """A failed write said in one paragraph where the environment is to blame; the error itself otherwise."""
    if err.errno not in ENVIRONMENT:
        return err
    return WriteError(f"cannot write into {folder}: {err.strerror}. The run stopped; what it saved before stays "
                      f"readable (its last checkpoint among it). Free space or fix the folder's permissions, then "
                      f"resume={folder} goes on from that checkpoint.")


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
