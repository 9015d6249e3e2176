"""Reading the published file formats, the shipped sample, the train/val split, device batches and the synthetic
dataset."""

import gzip
import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, needs_fashion
from idx_files import write_idx

from diagnose.data import datasets as datasets_module
from diagnose.data.batches import augment, shuffled_batches, to_input
from diagnose.data.cifar import CIFAR10, CIFAR100, CifarLayout, read_cifar
from diagnose.data.datasets import SHIPPED_DIR, DeviceData, RawData, read_dataset, read_sample, split
from diagnose.data.idx import read_images, read_labels
from diagnose.data.sources import SOURCES
from diagnose.data.synthetic import make_synthetic
from diagnose.errors import UserError

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
PUBLISHED = [name for name, source in SOURCES.items() if not source.sample_of]  # found on disk or downloaded
SAMPLE = "fashion_mnist_sample"


def random_bytes(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_mnist_like(folder: Path, n_train: int = 30, n_test: int = 10, *, gz: bool = True) -> dict[str, np.ndarray]:
    """The four IDX files of an MNIST-style dataset; returns what each holds."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": random_bytes((n_train, 28, 28), 1),
        "train-labels-idx1-ubyte": random_bytes((n_train,), 2) % 10,
        "t10k-images-idx3-ubyte": random_bytes((n_test, 28, 28), 3),
        "t10k-labels-idx1-ubyte": random_bytes((n_test,), 4) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if gz else name), array, gzip=gz)
    return arrays


@pytest.fixture
def no_system_datasets(monkeypatch, tmp_path):
    """Hide /usr/share/datasets so that a machine with MNIST installed behaves like one without."""
    monkeypatch.setattr(datasets_module, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path / "system"


# --- IDX ---


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("suffix", [".gz", ""])  # gzip is detected by content, whatever the name says
def test_idx_round_trip(tmp_path, gz, suffix):
    images, labels = random_bytes((5, 7, 3)), random_bytes((5,), 1)
    write_idx(tmp_path / f"images{suffix}", images, gzip=gz)
    write_idx(tmp_path / f"labels{suffix}", labels, gzip=gz)
    got_images, got_labels = read_images(tmp_path / f"images{suffix}"), read_labels(tmp_path / f"labels{suffix}")
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 1, 7, 3)
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_labels_read_as_images_is_a_bad_magic(tmp_path):
    write_idx(tmp_path / "labels", random_bytes((5,)), gzip=False)
    with pytest.raises(UserError, match=r"labels.*magic number is 0x00000801, expected 0x00000803"):
        read_images(tmp_path / "labels")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_file_is_refused(tmp_path, gz):
    path = tmp_path / "images.gz"
    write_idx(path, random_bytes((20, 28, 28)), gzip=gz)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="images.gz"):
        read_images(path)


def test_idx_payload_longer_than_header_says_is_refused(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, random_bytes((5,)), gzip=False)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(UserError, match="says 13 bytes"):
        read_labels(path)


def test_idx_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing-here"):
        read_labels(tmp_path / "nothing-here")


# --- CIFAR ---


def write_cifar(root: Path, layout: CifarLayout, per_batch: int, protocol: int) -> None:
    """Batches in the published layout: pickled dicts of a (N, 3072) uint8 array and a label list."""
    folder = root / layout.folder
    folder.mkdir(parents=True)
    for i, member in enumerate((*layout.train, *layout.test)):
        batch = {
            b"batch_label": member.encode(),
            b"data": random_bytes((per_batch, 3072), seed=10 + i),
            layout.label_key: [int(v) for v in random_bytes((per_batch,), seed=20 + i) % classes(layout)],
            b"filenames": [f"{member}_{k}.png".encode() for k in range(per_batch)],
        }
        (folder / member).write_bytes(pickle.dumps(batch, protocol=protocol))


def classes(layout: CifarLayout) -> int:
    return 100 if layout is CIFAR100 else 10


def pack(root: Path, layout: CifarLayout, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / layout.folder, arcname=layout.folder)
    return archive


@pytest.mark.parametrize("layout", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
@pytest.mark.parametrize("packed", [True, False], ids=["archive", "folder"])
@pytest.mark.parametrize("protocol", [3, 5])  # 5 stores arrays through numpy's _frombuffer
def test_cifar_round_trip(tmp_path, layout, packed, protocol):
    write_cifar(tmp_path, layout, per_batch=4, protocol=protocol)
    source = pack(tmp_path, layout, tmp_path / "c.tar.gz") if packed else tmp_path / layout.folder
    (train_x, train_y), (test_x, test_y) = read_cifar(source, layout)

    n_train = 4 * len(layout.train)
    assert train_x.shape == (n_train, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (4, 3, 32, 32) and train_y.dtype == test_y.dtype == np.int64
    # Pixel (c, i, j) of an image is at c*1024 + i*32 + j of its row: channel planes, row-major.
    first = random_bytes((4, 3072), seed=10)
    assert train_x[1, 2, 5, 7] == first[1, 2 * 1024 + 5 * 32 + 7]
    last = random_bytes((4, 3072), seed=10 + len(layout.train))
    np.testing.assert_array_equal(test_x.reshape(4, -1), last)
    np.testing.assert_array_equal(train_y[:4], random_bytes((4,), seed=20) % classes(layout))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    write_cifar(tmp_path, CIFAR10, per_batch=2, protocol=3)
    marker = tmp_path / "pwned"
    (tmp_path / CIFAR10.folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(marker)}))
    with pytest.raises(UserError, match=r"data_batch_3.*system"):
        read_cifar(tmp_path / CIFAR10.folder, CIFAR10)
    assert not marker.exists()


def test_cifar_truncated_archive_is_refused(tmp_path):
    write_cifar(tmp_path, CIFAR100, per_batch=50, protocol=3)
    archive = pack(tmp_path, CIFAR100, tmp_path / "cifar-100-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(UserError, match="cifar-100-python.tar.gz"):
        read_cifar(archive, CIFAR100)


def test_cifar_archive_without_a_member_is_refused(tmp_path):
    write_cifar(tmp_path, CIFAR10, per_batch=2, protocol=3)
    (tmp_path / CIFAR10.folder / "test_batch").unlink()
    archive = pack(tmp_path, CIFAR10, tmp_path / "c.tar.gz")
    with pytest.raises(UserError, match="cifar-10-batches-py/test_batch"):
        read_cifar(archive, CIFAR10)


# --- read_dataset: finding files without the network ---


@pytest.mark.parametrize("data", PUBLISHED)
def test_the_data_folder_defaults_to_data_and_follows_diagnose_data(data, monkeypatch):
    monkeypatch.delenv("DIAGNOSE_DATA", raising=False)
    assert compose_config([f"data={data}"]).data.root == "data"
    monkeypatch.setenv("DIAGNOSE_DATA", "/scratch/datasets")
    assert compose_config([f"data={data}"]).data.root == "/scratch/datasets"
    assert compose_config([f"data={data}", "data.root=here"]).data.root == "here"  # the command line wins


def test_read_dataset_finds_the_debian_fashion_mnist(tmp_path):
    needs_fashion()
    raw = read_dataset("fashion_mnist", tmp_path, download=False)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert len(raw.train_y) == 60000 and len(raw.test_y) == 10000 and raw.n_classes == 10
    assert raw.train_y.dtype == np.int64 and sorted(np.unique(raw.test_y)) == list(range(10))


def test_a_sweeps_next_job_gets_the_dataset_read_last_unless_its_files_changed(tmp_path, no_system_datasets,
                                                                              monkeypatch):
    arrays = write_mnist_like(tmp_path / "data" / "mnist", n_train=12)
    decoded = []
    monkeypatch.setattr(datasets_module, "_read", lambda *args, read=datasets_module._read: decoded.append(1) or
                        read(*args))
    first = read_dataset("mnist", tmp_path / "data", download=False)
    data = split(first, val_size=2, subset=None, device=torch.device("cpu"))
    data.test_x += 1  # a run changing what it holds changes nothing that is kept
    data.train_x += 1
    again = read_dataset("mnist", tmp_path / "data", download=False)
    assert len(decoded) == 1 and again is first  # the same files, unchanged: not decoded again
    np.testing.assert_array_equal(again.test_x[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(again.train_x[:, 0], arrays["train-images-idx3-ubyte"])
    write_mnist_like(tmp_path / "data" / "mnist", n_train=14)  # replaced: read afresh
    assert len(read_dataset("mnist", tmp_path / "data", download=False).train_x) == 14 and len(decoded) == 2
    read_sample(SAMPLE)  # another dataset in between: the last one read is the one kept
    assert len(read_dataset("mnist", tmp_path / "data", download=False).train_x) == 14 and len(decoded) == 4


def test_read_dataset_uses_the_debian_spelling_of_the_system_folder(tmp_path, no_system_datasets):
    arrays = write_mnist_like(no_system_datasets / "fashion-mnist")
    raw = read_dataset("fashion_mnist", tmp_path / "data", download=False)
    np.testing.assert_array_equal(raw.train_x[:, 0], arrays["train-images-idx3-ubyte"])


def test_read_dataset_prefers_root_and_accepts_unzipped_idx(tmp_path, no_system_datasets):
    write_mnist_like(no_system_datasets / "mnist", n_train=7)
    arrays = write_mnist_like(tmp_path / "data" / "mnist", n_train=12, gz=False)
    raw = read_dataset("mnist", tmp_path / "data", download=False)
    assert len(raw.train_x) == 12
    np.testing.assert_array_equal(raw.test_y, arrays["t10k-labels-idx1-ubyte"])


def test_read_dataset_finds_extracted_cifar(tmp_path, no_system_datasets):
    write_cifar(tmp_path / "data" / "cifar10", CIFAR10, per_batch=3, protocol=3)
    raw = read_dataset("cifar10", tmp_path / "data", download=False)
    assert raw.train_x.shape == (15, 3, 32, 32) and raw.test_x.shape == (3, 3, 32, 32) and raw.n_classes == 10


def test_read_dataset_missing_without_download_says_where_to_put_files(tmp_path, no_system_datasets):
    with pytest.raises(UserError) as err:
        read_dataset("mnist", tmp_path / "data", download=False)
    message = str(err.value)
    assert str(tmp_path / "data" / "mnist") in message
    assert all(name in message for name in SOURCES["mnist"].checksums)


def test_read_dataset_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(UserError, match="cifar10, cifar100, fashion_mnist, mnist"):
        read_dataset("imagenet", tmp_path, download=False)


def test_read_dataset_refuses_labels_that_do_not_match_images(tmp_path, no_system_datasets):
    folder = tmp_path / "mnist"
    write_mnist_like(folder, n_train=30)
    write_idx(folder / "train-labels-idx1-ubyte.gz", random_bytes((29,)) % 10, gzip=True)
    with pytest.raises(UserError, match="30 images but 29 labels"):
        read_dataset("mnist", tmp_path, download=False)


# --- the sample shipped in the package: the default data ---


def test_the_default_data_is_the_shipped_sample_with_its_own_validation_size():
    for command in ("train", "check", "probe"):
        assert compose_config([], command).data.name == SAMPLE
    assert compose_config([]).data.val_size == 1000  # of 10,000: the published sets' 5000 would leave half
    assert not hasattr(compose_config([]).data, "root")  # nothing to look up: it is in the package


def test_the_shipped_files_have_the_checksums_of_the_source_table():
    source = SOURCES[SAMPLE]
    assert source.algorithm == "sha256" and len(source.checksums) == 4
    for file, checksum in source.checksums.items():
        assert hashlib.sha256((SHIPPED_DIR / SAMPLE / file).read_bytes()).hexdigest() == checksum, file
    assert (SHIPPED_DIR / SAMPLE / "LICENSE").read_text().count("MIT") >= 1


def idx_payload(path: Path) -> np.ndarray:
    """An IDX file's data bytes, read without the package's reader: gunzip, skip 4 bytes per dimension + magic."""
    data = gzip.decompress(path.read_bytes())
    return np.frombuffer(data, np.uint8, offset=4 * (1 + data[3]))


def test_the_sample_is_balanced_and_read_as_the_raw_bytes_say():
    raw = read_sample(SAMPLE)
    assert raw.train_x.shape == (10000, 1, 28, 28) and raw.test_x.shape == (2000, 1, 28, 28) and raw.n_classes == 10
    assert np.bincount(raw.train_y).tolist() == [1000] * 10 and np.bincount(raw.test_y).tolist() == [200] * 10
    folder = SHIPPED_DIR / SAMPLE
    np.testing.assert_array_equal(raw.train_y, idx_payload(folder / "train-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(raw.test_x.reshape(-1), idx_payload(folder / "t10k-images-idx3-ubyte.gz"))
    # kept in the published (shuffled) order, so a prefix (data.test_subset) holds every class
    assert set(raw.test_y[:100].tolist()) == set(range(10))


def test_the_sample_is_the_first_examples_of_each_class_of_the_published_set():
    needs_fashion()
    full, sample = read_dataset("fashion_mnist", Path("nowhere"), download=False), read_sample(SAMPLE)
    for part, per_class in (("train", 1000), ("test", 200)):
        labels = getattr(full, f"{part}_y")
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
        np.testing.assert_array_equal(getattr(sample, f"{part}_x"), getattr(full, f"{part}_x")[keep])
        np.testing.assert_array_equal(getattr(sample, f"{part}_y"), labels[keep])


def test_a_missing_shipped_file_says_the_installation_is_incomplete(tmp_path, monkeypatch):
    (tmp_path / SAMPLE).mkdir()
    monkeypatch.setattr(datasets_module, "SHIPPED_DIR", tmp_path)
    with pytest.raises(UserError, match=r"incomplete\. Reinstall diagnose.*data=fashion_mnist\."):
        read_sample(SAMPLE)


def test_the_run_says_which_data_it_trains_on():
    data = split(read_sample(SAMPLE), val_size=1000, subset=None, device="cpu")
    assert data.describe() == ("data: the Fashion-MNIST sample shipped with diagnose (data=fashion_mnist for the "
                               "full set): 9,000 train / 1,000 val / 2,000 test examples")


def test_a_missing_dataset_offers_the_shipped_sample(tmp_path, no_system_datasets):
    with pytest.raises(UserError, match="data=fashion_mnist_sample \\(shipped with diagnose\\)"):
        read_dataset("mnist", tmp_path, download=False)


# --- split ---


def numbered(n: int = 200, channels: int = 3) -> RawData:
    """Example i is an image filled with i and labelled i, so a split's bookkeeping can be checked."""
    ids = torch.arange(n)
    x = ids.view(n, 1, 1, 1).expand(n, channels, 4, 4).to(torch.uint8).contiguous()
    return RawData(x, ids, x[:10].clone(), ids[:10].clone(), n_classes=n, about="numbered images")


def test_split_partitions_the_training_set_and_keeps_images_with_labels():
    data = split(numbered(), val_size=50, subset=None, device=torch.device("cpu"))
    assert isinstance(data, DeviceData) and data.shape == (3, 4, 4)
    assert len(data.train_y) == 150 and len(data.val_y) == 50 and len(data.test_y) == 10
    assert torch.equal(torch.cat([data.train_y, data.val_y]).sort().values, torch.arange(200))
    assert torch.equal(data.train_x[:, 0, 0, 0].long(), data.train_y)
    assert torch.equal(data.val_x[:, 2, 3, 3].long(), data.val_y)


def test_split_is_deterministic_and_ignores_the_global_seed():
    torch.manual_seed(1)
    a = split(numbered(), val_size=50, subset=None, device="cpu")
    torch.manual_seed(2)
    b = split(numbered(), val_size=50, subset=None, device="cpu")
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_y, torch.arange(50))  # it is shuffled, not the first 50


def test_split_subset_keeps_the_first_training_examples_and_the_same_validation():
    full = split(numbered(), val_size=50, subset=None, device="cpu")
    part = split(numbered(), val_size=50, subset=20, device="cpu")
    assert torch.equal(part.train_y, full.train_y[:20])
    assert torch.equal(part.val_y, full.val_y) and torch.equal(part.test_y, full.test_y)


def test_split_mean_and_std_are_those_of_the_training_part():
    raw = make_synthetic(3, 8, 5, train_count=300, test_count=10, seed=0)
    data = split(raw, val_size=100, subset=150, device="cpu")
    x = data.train_x.numpy() / 255.0
    np.testing.assert_allclose(data.mean.numpy(), x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(data.std.numpy(), x.std(axis=(0, 2, 3)), rtol=1e-5)
    assert data.mean.dtype == data.std.dtype == torch.float32


@pytest.mark.parametrize(
    ("val_size", "subset", "key"),
    [(200, None, "data.val_size"), (10, 191, "data.subset")],  # against the data; the schema checks the ranges
)
def test_split_bad_values_name_their_key(val_size, subset, key):
    with pytest.raises(UserError, match=key):
        split(numbered(), val_size=val_size, subset=subset, device="cpu")


# --- batches ---


def epoch(seed: int, n: int = 103, batch: int = 10) -> list[torch.Tensor]:
    return list(shuffled_batches(n, batch, torch.Generator().manual_seed(seed), "cpu"))


def test_shuffled_batches_cover_each_index_at_most_once_and_drop_the_rest():
    batches = epoch(0)
    assert len(batches) == 10 and all(b.shape == (10,) for b in batches)
    seen = torch.cat(batches)
    assert len(seen.unique()) == 100 and seen.min() >= 0 and seen.max() < 103
    assert all(torch.equal(a, b) for a, b in zip(batches, epoch(0), strict=True))
    assert not torch.equal(torch.cat(epoch(1)), seen)


def test_to_input_centred_has_zero_mean_unit_std_per_channel():
    data = split(make_synthetic(3, 8, 5, 400, 10, seed=1), val_size=0, subset=None, device="cpu")
    x = to_input(data.train_x, data.mean, data.std, center=True)
    assert x.dtype == torch.float32 and x.shape == data.train_x.shape
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    raw = to_input(data.train_x, data.mean, data.std, center=False)
    assert raw.min() >= 0 and raw.max() <= 1
    torch.testing.assert_close(raw * 255, data.train_x.float())


def test_augment_keeps_shape_and_dtype_and_is_deterministic():
    x = torch.from_numpy(random_bytes((16, 3, 12, 12)))
    a = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(1)))


def test_augment_is_a_crop_of_the_padded_image_possibly_flipped():
    x = random_bytes((64, 3, 10, 10), seed=5)
    out = augment(torch.from_numpy(x), torch.Generator().manual_seed(0)).numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    chosen = set()
    for k in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(out[k], _crop(padded[k], dy, dx, flip))
        ]
        assert len(matches) == 1, f"example {k} is not one crop of its padded image"
        chosen.add(matches[0])
    assert {flip for _, _, flip in chosen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in chosen}) > 10  # offsets vary, not always the centre


def _crop(image: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    crop = image[:, dy : dy + 10, dx : dx + 10]
    return crop[:, :, ::-1] if flip else crop


# --- synthetic ---


def test_synthetic_is_deterministic_per_seed():
    a, b, c = (make_synthetic(1, 12, 10, 100, 20, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)


@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 100)])
def test_synthetic_shapes_and_balanced_labels(channels, size, classes):
    raw = make_synthetic(channels, size, classes, train_count=1000, test_count=300, seed=0)
    assert raw.train_x.shape == (1000, channels, size, size) and raw.test_x.shape == (300, channels, size, size)
    assert raw.train_x.dtype == torch.uint8 and raw.train_y.dtype == torch.int64 and raw.n_classes == classes
    counts = torch.bincount(raw.train_y, minlength=classes)
    assert counts.max() - counts.min() <= 1
    assert raw.train_x.float().std() > 20  # not a blank image


def test_synthetic_is_learnable_but_not_by_one_pixel():
    raw = make_synthetic(1, 28, 10, train_count=3000, test_count=1000, seed=0)
    data = split(raw, val_size=0, subset=None, device="cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(28 * 28, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen, step = torch.Generator().manual_seed(0), 0
    while step < 200:
        for idx in shuffled_batches(len(data.train_y), 64, gen, "cpu"):
            x = to_input(data.train_x[idx], data.mean, data.std, center=True).flatten(1)
            loss = torch.nn.functional.cross_entropy(model(x), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == 200:
                break
    with torch.no_grad():
        logits = model(to_input(data.test_x, data.mean, data.std, center=True).flatten(1))
    assert (logits.argmax(1) == data.test_y).float().mean() > 0.6

    # The best single pixel, classifying by the nearest class mean of that pixel, stays near chance.
    x, y = raw.train_x.flatten(1).float(), raw.train_y
    class_means = torch.stack([x[y == k].mean(0) for k in range(10)])  # (classes, pixels)
    guess = (raw.test_x.flatten(1).float()[:, None, :] - class_means[None]).abs().argmin(1)  # (N, pixels)
    assert (guess == raw.test_y[:, None]).float().mean(0).max() < 0.3


def test_synthetic_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="data.classes must be a whole number >= 2, got 1"):
        compose_config(["data=synthetic", "data.classes=1"])
