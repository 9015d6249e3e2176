"""Files written whole: through a temp file renamed into place, with the permissions of any other output."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
