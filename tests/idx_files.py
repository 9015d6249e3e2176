"""Write IDX files (the MNIST family's format) for tests: the package only reads them."""

import gzip as gz
import struct
from pathlib import Path

import numpy as np

UBYTE = 0x08  # the IDX dtype code of unsigned bytes


def write_idx(path: Path, array: np.ndarray, gzip: bool) -> None:
    """Write a uint8 array as IDX: (N,) for labels, (N, H, W) for images."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">I{array.ndim}I", (UBYTE << 8) | array.ndim, *array.shape)
    data = header + array.tobytes()
    Path(path).write_bytes(gz.compress(data) if gzip else data)
