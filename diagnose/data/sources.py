"""Where each dataset's files come from (published and downloaded, or shipped inside the package), and their
checksums."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    format: str  # "idx" (four MNIST-style files) or "cifar" (one archive of python batches)
    checksums: dict[str, str]  # file name -> its checksum: of the published download, or of the file shipped
    n_classes: int
    title: str  # how a run names the data it trains on
    homepage: str  # named in errors, so a user without network knows where to fetch the files
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order; a file's URL is base + file name
    algorithm: str = "md5"  # hashlib's name of the checksums: what the publishers give; sha256 for files made here
    sample_of: str | None = None  # a sample of that dataset, shipped in the package (SHIPPED/<name>/): no download


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_TORONTO = ("https://www.cs.toronto.edu/~kriz/",)

SOURCES: dict[str, Source] = {
    "mnist": Source(
        format="idx",
        checksums={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=_MNIST_MIRRORS,
        n_classes=10,
        title="MNIST",
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": Source(
        format="idx",
        checksums={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=_FASHION_MIRRORS,
        n_classes=10,
        title="Fashion-MNIST",
        homepage="https://github.com/zalandoresearch/fashion-mnist (or Debian's dataset-fashion-mnist)",
    ),
    "cifar10": Source(
        format="cifar",
        checksums={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        mirrors=_TORONTO,
        n_classes=10,
        title="CIFAR-10",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": Source(
        format="cifar",
        checksums={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
        mirrors=_TORONTO,
        n_classes=100,
        title="CIFAR-100",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    # The default data, made from Debian's copy of Fashion-MNIST by scripts/make_fashion_sample.py (the first 1,000
    # training and 200 test examples of each class, in file order); licence and provenance beside the files.
    "fashion_mnist_sample": Source(
        format="idx",
        checksums={
            "train-images-idx3-ubyte.gz": "1ecc7f90b9d150b40c359acf80cfec4990bfbcc1db9fe346f886d9e7fcae0000",
            "train-labels-idx1-ubyte.gz": "036b3a9440a684e6f8117e910b5dad249f9165250c2ae2341f2bfd8482381497",
            "t10k-images-idx3-ubyte.gz": "e60ede7714c657ced2d723c33140572b5476b46df34b385a6e176b0757dc4318",
            "t10k-labels-idx1-ubyte.gz": "e6d25f5f3e85bb315a10172898c1c8f69ce52c4f9306c5821205c821bfca8847",
        },
        algorithm="sha256",
        n_classes=10,
        title="Fashion-MNIST sample shipped with diagnose",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        sample_of="fashion_mnist",
    ),
}
