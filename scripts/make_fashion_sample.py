"""Make the Fashion-MNIST sample shipped with diagnose (data=fashion_mnist_sample) from the full dataset.

    python scripts/make_fashion_sample.py                     # from Debian's dataset-fashion-mnist
    python scripts/make_fashion_sample.py --source DIR --out DIR

The rule, so that anyone can make the same files again: of each split, the first TRAIN_PER_CLASS (training) or
TEST_PER_CLASS (test) examples of every class, in the published file order, kept in that order (the published
order is shuffled, so `data.test_subset=N`, which takes the first N, stays balanced too). The source files are
checked against the sha256 of their decompressed contents (the same for the upstream download and Debian's
re-compressed copy); the files written are IDX, gzipped with no name and no time in the header, so the same
source gives the same bytes with the same zlib. It prints the sha256 of each file written: they are the
fashion_mnist_sample entry of diagnose/data/sources.py.
"""

import argparse
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from diagnose.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_images, read_labels

TRAIN_PER_CLASS = 1000  # 10,000 training examples: the default CNN learns them in two epochs in under a minute
TEST_PER_CLASS = 200  # 2,000 test examples: the test accuracy to within about a point (binomial std ~0.9)
CLASSES = 10

# sha256 of the decompressed published files (Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 holds
# them re-gzipped: its .gz files have other checksums than the upstream downloads, the same contents)
SOURCE_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
ROOT = Path(__file__).resolve().parent.parent


def first_of_each_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` examples of every class, in file order."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(CLASSES)]
    if any(len(p) < per_class for p in picked):
        raise SystemExit(f"the source has fewer than {per_class} examples of some class")
    return np.sort(np.concatenate(picked))


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX encoding of a uint8 array: the magic, each dimension as a big-endian uint32, the bytes."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array, np.uint8).tobytes()


def write_gz(path: Path, data: bytes) -> None:
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
        f.write(data)


def check_source(folder: Path) -> None:
    for name, expected in SOURCE_SHA256.items():
        found = hashlib.sha256(gzip.decompress((folder / name).read_bytes())).hexdigest()
        if found != expected:
            raise SystemExit(f"{folder / name} is not the published file: its contents' sha256 is {found}, "
                             f"expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=ROOT / "diagnose/data/shipped/fashion_mnist_sample")
    args = parser.parse_args()
    check_source(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        images = read_images(args.source / f"{split}-images-idx3-ubyte.gz")[:, 0]  # (N, 28, 28)
        labels = read_labels(args.source / f"{split}-labels-idx1-ubyte.gz")
        keep = first_of_each_class(labels, per_class)
        write_gz(args.out / f"{split}-images-idx3-ubyte.gz", idx_bytes(images[keep], IMAGES_MAGIC))
        write_gz(args.out / f"{split}-labels-idx1-ubyte.gz", idx_bytes(labels[keep], LABELS_MAGIC))
        print(f"{split}: {len(keep)} examples, {per_class} a class, indices {keep[0]}..{keep[-1]} of {len(labels)}")
    for name in SOURCE_SHA256:
        path = args.out / name
        print(f'"{name}": "{hashlib.sha256(path.read_bytes()).hexdigest()}",  # {path.stat().st_size:,} bytes')


if __name__ == "__main__":
    main()
