"""Where each dataset's published files come from, and their official checksums."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    format: str  # "idx" (four MNIST-style files) or "cifar" (one archive of python batches)
    md5: dict[str, str]  # published file name -> md5 of that download
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is base + file name
    n_classes: int
    homepage: str  # named in errors, so a user without network knows where to fetch the files


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_TORONTO = ("https://www.cs.toronto.edu/~kriz/",)

SOURCES: dict[str, Source] = {
    "mnist": Source(
        format="idx",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=_MNIST_MIRRORS,
        n_classes=10,
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": Source(
        format="idx",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=_FASHION_MIRRORS,
        n_classes=10,
        homepage="https://github.com/zalandoresearch/fashion-mnist (or Debian's dataset-fashion-mnist)",
    ),
    "cifar10": Source(
        format="cifar",
        md5={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        mirrors=_TORONTO,
        n_classes=10,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": Source(
        format="cifar",
        md5={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
        mirrors=_TORONTO,
        n_classes=100,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}
