"""Download one file from a list of mirrors, checksum-verified and written atomically."""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from diagnose.errors import UserError
from diagnose.files import umask_permissions

_CHUNK = 1 << 16
# Some mirrors refuse urllib's default agent (yann.lecun.com answers 403 to "Python-urllib").
_HEADERS = {"User-Agent": "diagnose (dataset download)"}


class _Failed(Exception):
    """One mirror failed; the reason goes into the final error."""


def download(urls: list[str], dest: Path, checksum: str, algorithm: str = "md5", *, timeout: float = 30.0) -> Path:
    """Fetch `dest` from the first of `urls` that delivers it with the right checksum (`algorithm`: hashlib's name
    of it); return `dest`."""
    dest = Path(dest)
    made = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the folder {dest.parent} to download {dest.name} into "
                        f"({e.strerror}).") from None
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, checksum, algorithm, timeout)
            return dest
        except (_Failed, OSError) as e:  # OSError: the folder is not writable (or the network failed oddly)
            failures.append(f"{url}: {e}")
    tried = "; ".join(failures) or "no URLs given"
    for folder in made:  # made for this download, and it got nothing: leave no empty folder behind
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    raise UserError(f"Could not download {dest.name} into {dest.parent}. Tried {tried}.")


def _fetch(url: str, dest: Path, checksum: str, algorithm: str, timeout: float) -> None:
    # The temp file sits next to dest so os.replace is an atomic rename on the same file system;
    # until then no file named dest exists, so a broken download never loads as data.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out, algorithm, timeout, dest.name)
        if digest != checksum:
            raise _Failed(f"checksum mismatch ({algorithm} {digest}, expected {checksum})")
        umask_permissions(tmp)
        os.replace(tmp, dest)
    finally:
        # After a successful replace tmp no longer exists; otherwise this removes the partial file,
        # also on Ctrl-C.
        Path(tmp).unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, algorithm: str, timeout: float, label: str) -> str:
    """Copy the body of `url` into `out`; return its checksum."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_HEADERS), timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with _progress() as progress:
                task = progress.add_task(label, total=total)
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(task, advance=len(chunk))
    except urllib.error.HTTPError as e:
        raise _Failed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _Failed(str(e.reason)) from e
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, malformed responses
        raise _Failed(f"{type(e).__name__}: {e}") from e
    # http.client returns a short body without complaint when the server closes early.
    if total is not None and received != total:
        raise _Failed(f"the connection ended after {received} of {total} bytes")
    return digest.hexdigest()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
