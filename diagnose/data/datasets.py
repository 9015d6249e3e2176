"""Find a dataset's files (shipped in the package; or local, system, download), read them, and split them onto the
device."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diagnose.data import cifar, idx
from diagnose.data.download import download as fetch
from diagnose.data.sources import SOURCES, Source
from diagnose.errors import UserError
from diagnose.registry import lookup

# Debian/Ubuntu dataset packages install here (dataset-fashion-mnist -> fashion-mnist/).
SYSTEM_DIR = Path("/usr/share/datasets")
# The samples shipped inside the package, a folder each, named as their data option.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"

_CIFAR_LAYOUTS = {"cifar10": cifar.CIFAR10, "cifar100": cifar.CIFAR100}

Array = np.ndarray | torch.Tensor


@dataclass
class RawData:
    """A dataset on the CPU, as read from its files."""

    train_x: Array  # (N, C, H, W) uint8 images, or float32 inputs (data=file; features as (N, F, 1, 1))
    train_y: Array  # (N,) int64
    test_x: Array
    test_y: Array
    n_classes: int
    about: str  # which data, and where it came from: the run's first line says it


@dataclass
class DeviceData:
    """The whole dataset resident on the training device, so batches are cut by indexing there."""

    train_x: torch.Tensor  # (N, C, H, W) uint8, or float32 (RawData)
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor  # (C,) float32, of the inputs as to_input reads them: uint8 train_x / 255, float train_x as is
    std: torch.Tensor  # (C,) float32
    n_classes: int
    about: str

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def describe(self) -> str:
        """One line: which data a run trains on, and how much of it."""
        return (f"data: {self.about}: {len(self.train_y):,} train / {len(self.val_y):,} val / "
                f"{len(self.test_y):,} test examples")


def read_dataset(name: str, root: Path, *, download: bool = True, mirror: str | None = None) -> RawData:
    """Read `name` from `root/<name>/`, else the system dataset folder, else download into `root/<name>/`."""
    source = lookup({n: s for n, s in SOURCES.items() if not s.sample_of}, name, "dataset")
    target = Path(root) / name
    # Debian spells names with hyphens (fashion-mnist); dict.fromkeys drops the duplicate for "mnist".
    spellings = dict.fromkeys([name, name.replace("_", "-")])
    folders = [target, *(SYSTEM_DIR / n for n in spellings)]
    paths = {}
    for file in source.checksums:
        found = _find(_accepted_names(file, name, source), folders)
        paths[file] = found or _download(file, source, target, download, mirror)
    folders_used = sorted({str(path.parent) for path in paths.values()})
    return _read_once(source, name, paths, f"{source.title} from {', '.join(folders_used)}")


def read_sample(name: str) -> RawData:
    """Read the sample `name` shipped inside the package: nothing to look up, nothing to download."""
    source = lookup({n: s for n, s in SOURCES.items() if s.sample_of}, name, "shipped sample")
    folder = SHIPPED_DIR / name
    paths = {file: folder / file for file in source.checksums}
    missing = [file for file, path in paths.items() if not path.is_file()]
    if missing:
        raise UserError(
            f"This installation of diagnose lacks the files of its {source.title} ({', '.join(missing)} in "
            f"{folder}): it is incomplete. Reinstall diagnose (pip install --force-reinstall diagnose, or "
            f"pip install -e . in a checkout), or train on the full dataset: data={source.sample_of}."
        )
    about = f"the {source.title} (data={source.sample_of} for the full set)"
    return _read_once(source, name, paths, about)


_last_read: list[tuple[tuple, RawData]] = []  # the dataset read last, by the files it was read from


def _read_once(source: Source, name: str, paths: dict[str, Path], about: str) -> RawData:
    """The dataset in `paths`, read and checked, or the one read last from the same files unchanged (their sizes and
    times). A sweep's jobs run one after another in one process (Hydra's basic launcher, a local launcher's worker)
    and read the same dataset: decompressing Fashion-MNIST takes ~0.35 s a job, a CIFAR archive longer. `split`
    copies what it takes, so no run holds on to (or changes) the arrays kept here."""
    key = (name, about, tuple((str(path), *_stamp(path)) for path in paths.values()))
    if _last_read and _last_read[0][0] == key:
        return _last_read[0][1]
    raw = _checked(_read(source, name, paths, about), name, paths)
    _last_read[:] = [(key, raw)]
    return raw


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def _accepted_names(file: str, name: str, source: Source) -> list[str]:
    """IDX files may be stored unzipped; a CIFAR archive may be stored extracted."""
    if source.format == "idx":
        return [file, file.removesuffix(".gz")]
    return [_CIFAR_LAYOUTS[name].folder, file]  # the extracted folder first: it skips decompressing 160 MB


def _find(names: list[str], folders: list[Path]) -> Path | None:
    for folder in folders:
        for candidate in names:
            try:
                if (folder / candidate).exists():
                    return folder / candidate
            except PermissionError:  # a folder this user may not look into (chmod 000, another user's)
                raise UserError(f"Cannot look into the folder {folder}: permission denied. Make it readable "
                                f"(chmod u+rx {folder}), or set data.root / the environment variable DIAGNOSE_DATA "
                                f"to a folder you can read.") from None
    return None


def _runs_now(name: str) -> str:
    """The data options that need no download on this machine."""
    shipped = [n for n, s in SOURCES.items() if s.sample_of]
    installed = [n for n in SOURCES if n != name and n not in shipped
                 and any((SYSTEM_DIR / s).is_dir() for s in (n, n.replace("_", "-")))]
    return ", or ".join([*(f"data={n} (shipped with diagnose)" for n in shipped), "data=synthetic",
                         *(f"data={n} (installed in {SYSTEM_DIR})" for n in installed)])


def _download(file: str, source: Source, target: Path, allowed: bool, mirror: str | None) -> Path:
    where = (
        f"Put the files {', '.join(source.checksums)} into the folder {target} (get them from {source.homepage}), "
        f"or set data.root / the environment variable DIAGNOSE_DATA to a folder that has a "
        f"'{target.name}' folder holding them. To train right away without files: {_runs_now(target.name)}."
    )
    if not allowed:
        raise UserError(f"{file} was not found and downloading is switched off. {where}")
    bases = (mirror,) if mirror else source.mirrors
    urls = [base.rstrip("/") + "/" + file for base in bases]
    try:
        return fetch(urls, target / file, source.checksums[file], source.algorithm)
    except UserError as e:
        raise UserError(f"{e} {where}") from e


def _read(source: Source, name: str, paths: dict[str, Path], about: str) -> RawData:
    if source.format == "cifar":
        (path,) = paths.values()
        (train_x, train_y), (test_x, test_y) = cifar.read_cifar(path, _CIFAR_LAYOUTS[name])
    else:
        train_x = idx.read_images(paths["train-images-idx3-ubyte.gz"])
        train_y = idx.read_labels(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64)
        test_x = idx.read_images(paths["t10k-images-idx3-ubyte.gz"])
        test_y = idx.read_labels(paths["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)
    return RawData(train_x, train_y, test_x, test_y, source.n_classes, about)


def _checked(raw: RawData, name: str, paths: dict[str, Path]) -> RawData:
    """`raw`, once its files are found to fit together: files that parse can still disagree (training images from
    one copy, labels from another)."""
    folders = ", ".join(sorted({str(p.parent) for p in paths.values()}))
    problems = []
    for part, x, y in (("training", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if len(x) != len(y):
            problems.append(f"the {part} split has {len(x)} images but {len(y)} labels")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < raw.n_classes:
            problems.append(f"the {part} labels fall outside 0..{raw.n_classes - 1}")
    if raw.train_x.shape[1:] != raw.test_x.shape[1:]:
        problems.append(f"training images are {raw.train_x.shape[1:]} but test images {raw.test_x.shape[1:]}")
    if problems:
        raise UserError(
            f"The {name} files in {folders} do not fit together: {'; '.join(problems)}. "
            f"Replace them with the published files (or delete them to download them again)."
        )
    return raw


def split(raw: RawData, *, val_size: int | None, subset: int | None, device: torch.device,
          test_subset: int | None = None) -> DeviceData:
    """Hold out `val_size` training examples (None: a tenth), optionally keep `subset` of the rest, move all to
    `device`."""
    n = len(raw.train_x)
    val_size = n // 10 if val_size is None else val_size
    if val_size >= n:
        raise UserError(f"data.val_size={val_size} must be below the {n} training examples.")
    if subset is not None and subset > n - val_size:
        raise UserError(
            f"data.subset={subset} must be between 1 and the {n - val_size} training examples left after "
            f"data.val_size={val_size} are held out (or null for all)."
        )
    # A fixed seed, not the run seed: runs that differ only in seed must see the same validation set.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    val, train = order[:val_size], order[val_size:]
    if subset is not None:
        train = train[:subset]
    x, y = torch.as_tensor(raw.train_x), torch.as_tensor(raw.train_y)
    train_x = x[train]
    mean, std = _channel_stats(train_x)
    return DeviceData(
        train_x=train_x.to(device),
        train_y=y[train].to(device),
        val_x=x[val].to(device),
        val_y=y[val].to(device),
        # copies on every device, as the indexing above makes them: raw may be kept for the next run (_read_once)
        test_x=torch.as_tensor(raw.test_x[:test_subset]).to(device, copy=True),
        test_y=torch.as_tensor(raw.test_y[:test_subset]).to(device, copy=True),
        mean=mean.to(device),
        std=std.to(device),
        n_classes=raw.n_classes,
        about=raw.about,
    )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the inputs as to_input reads them (x/255 for uint8, float as is)."""
    if x.dtype == torch.uint8:
        mean, std = _byte_stats(x)
    else:
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        std = var.sqrt()
    # A constant channel would divide by zero; std 1 makes centring only subtract its mean.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float(), std.float()


def _byte_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of x/255, exact, from a histogram of the 256 byte values.

    Counting bytes needs no float copy of the data (MNIST as float64 would be 376 MB).
    """
    channels = x.shape[1]
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(channels)])
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1).double()
    mean = (counts * values).sum(1) / total
    var = (counts * values**2).sum(1) / total - mean**2
    return mean, var.clamp_min(0).sqrt()
