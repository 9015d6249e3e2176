"""Read the CIFAR-10/100 "python version" batches, from the archive or its extracted folder."""

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diagnose.errors import UserError


@dataclass(frozen=True)
class CifarLayout:
    folder: str  # top-level folder inside the archive, also the name of the extracted folder
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    label_key=b"labels",
)
CIFAR100 = CifarLayout(folder="cifar-100-python", train=("train",), test=("test",), label_key=b"fine_labels")

# Everything a pickled numpy array needs and nothing else: the official files are pickles, and
# an unrestricted unpickler runs whatever callable a file names (os.system included).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    # Protocol 5 pickles of contiguous arrays (the default from Python 3.14) go through _frombuffer.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
}

Split = tuple[np.ndarray, np.ndarray]  # images (N, 3, 32, 32) uint8, labels (N,) int64


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar(source: Path, layout: CifarLayout) -> tuple[Split, Split]:
    """((train_x, train_y), (test_x, test_y)) from `cifar-*-python.tar.gz` or the extracted folder."""
    source = Path(source)
    raw = _read_folder(source, layout) if source.is_dir() else _read_archive(source, layout)
    batches = {member: _unpickle(data, source / member) for member, data in raw.items()}
    train = _join([batches[m] for m in layout.train], layout.label_key, source)
    test = _join([batches[m] for m in layout.test], layout.label_key, source)
    return train, test


def _read_folder(folder: Path, layout: CifarLayout) -> dict[str, bytes]:
    raw = {}
    for member in (*layout.train, *layout.test):
        try:
            raw[member] = (folder / member).read_bytes()
        except OSError as e:
            raise _corrupt(folder, f"{member} cannot be read ({e.strerror})") from e
    return raw


def _read_archive(path: Path, layout: CifarLayout) -> dict[str, bytes]:
    raw = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in (*layout.train, *layout.test):
                raw[member] = _extract(tar, f"{layout.folder}/{member}", path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"it cannot be read as a tar.gz archive ({e})") from e
    return raw


def _extract(tar: tarfile.TarFile, name: str, path: Path) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise _corrupt(path, f"the archive has no file {name}")
    return f.read()


def _unpickle(data: bytes, path: Path) -> dict:
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any parse failure of an untrusted file means the same thing to the user
        raise _corrupt(path, f"it cannot be unpickled ({e})") from e
    if not isinstance(batch, dict):
        raise _corrupt(path, f"it holds a {type(batch).__name__}, expected a dict")
    return batch


def _join(batches: list[dict], label_key: bytes, source: Path) -> Split:
    images, labels = [], []
    for batch in batches:
        x, y = batch.get(b"data"), batch.get(label_key)
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise _corrupt(source, f"a batch's b'data' is not a (N, 3072) uint8 array: {_describe(x)}")
        if y is None or len(y) != len(x):
            raise _corrupt(source, f"a batch has {len(x)} images but its {label_key!r} does not match")
        images.append(x.reshape(-1, 3, 32, 32))  # rows are stored channel-major: R plane, G, B
        labels.append(np.asarray(y, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _describe(x: object) -> str:
    return f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(
        f"The CIFAR data at {path} is not valid: {why}. It is probably truncated or not the published "
        f"'python version'; delete it and let diagnose download it again, or replace it with the file "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html."
    )
