"""Read IDX files, the format of the MNIST family (http://yann.lecun.com/exdb/mnist/)."""

import gzip as gz
import struct
import zlib
from pathlib import Path

import numpy as np

from diagnose.errors import UserError

# The magic is two zero bytes, a dtype byte (0x08 = unsigned byte) and the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


def read_images(path: Path) -> np.ndarray:
    """(N, 1, H, W) uint8 from an idx3 file, gzipped or not."""
    images = _read(Path(path), IMAGES_MAGIC)
    return images[:, None]


def read_labels(path: Path) -> np.ndarray:
    """(N,) uint8 from an idx1 file, gzipped or not."""
    return _read(Path(path), LABELS_MAGIC)


def _read(path: Path, magic: int) -> np.ndarray:
    data = _decompressed(path)
    ndim = magic & 0xFF
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise _corrupt(path, f"its magic number is 0x{found:08x}, expected 0x{magic:08x}")
    header_size = 4 * (1 + ndim)
    if len(data) < header_size:
        raise _corrupt(path, f"it has {len(data)} bytes, fewer than the {header_size}-byte header")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = header_size + int(np.prod(dims))
    if len(data) != expected:
        raise _corrupt(path, f"its header says {expected} bytes for shape {tuple(dims)}, it has {len(data)}")
    # A copy, because frombuffer over bytes is read-only and torch warns on read-only arrays.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _decompressed(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"Cannot read the IDX file {path}: {e.strerror}. Check that it is readable.") from e
    # Detect gzip by content: Debian and some mirrors ship files whose name and compression disagree.
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gz.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"its gzip stream is broken ({e})") from e


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(
        f"The IDX file {path} is not valid: {why}. It is probably truncated or not the file it is named "
        f"after; delete it and let diagnose download it again, or replace it with the published file."
    )
