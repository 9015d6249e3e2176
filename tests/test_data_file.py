"""data=file: your arrays from a .npz or .pt file, or from a function of yours (data._target_), read as written,
checked as the published datasets are, and trained on end to end."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, run_cli

from diagnose.build import build_model, build_run, load_data
from diagnose.config import to_dict
from diagnose.data.batches import to_input
from diagnose.data.synthetic import make_synthetic
from diagnose.errors import UserError
from diagnose.training.loop import train as train_run

CPU = torch.device("cpu")
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# A tiny CNN or MLP for a few steps, as TINY in conftest.py, on the file's data instead of data=synthetic.
SHORT = ["batch=16", "steps=4", "log_every=2", "device=cpu"]
CNN, MLP = ["model.widths=[8,16]"], ["model=mlp", "model.width=16", "model.depth=2"]


def images(n_train: int = 96, n_test: int = 32, channels: int = 3) -> tuple[np.ndarray, ...]:
    """Learnable 8x8 uint8 images, NCHW, with 4 balanced classes: (train_x, train_y, test_x, test_y)."""
    raw = make_synthetic(channels, 8, 4, n_train, n_test, seed=0)
    return tuple(np.asarray(a) for a in (raw.train_x, raw.train_y, raw.test_x, raw.test_y))


def save(path, train_x, train_y, test_x, test_y, *, keras: bool = False):
    """numpy.savez or torch.save (a dict of tensors), by the suffix; Keras's key names with `keras`."""
    names = ("x_train", "y_train", "x_test", "y_test") if keras else ("train_x", "train_y", "test_x", "test_y")
    arrays = dict(zip(names, (train_x, train_y, test_x, test_y), strict=True))
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({key: torch.as_tensor(value) for key, value in arrays.items()}, path)
    return path


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def floats(x):
    return x.astype(np.float32) / 255


def flat(x):
    return x.reshape(len(x), -1).astype(np.float32)


def gray(x):
    return np.ascontiguousarray(x[:, 0])  # (N, H, W), as Keras's MNIST


# name -> (file suffix, how the NCHW uint8 images are stored, Keras's key names, the model, what the data line says)
LAYOUTS = {
    "npz-nchw-uint8": (".npz", lambda x: x, False, CNN, "3x8x8 uint8 images (NCHW as detected"),
    "npz-nhwc-float-keras": (".npz", lambda x: nhwc(floats(x)), True, CNN, "3x8x8 float images (NHWC as detected"),
    "pt-nhwc-uint8": (".pt", nhwc, False, CNN, "3x8x8 uint8 images (NHWC as detected"),
    "pt-nchw-float": (".pt", floats, True, CNN, "3x8x8 float images (NCHW as detected"),
    "npz-features-float": (".npz", flat, False, MLP, "192 float features per example"),
    "npz-hw-uint8": (".npz", gray, True, CNN, "1x8x8 uint8 images ((N, H, W): one channel)"),
}


def write(tmp_path, name: str):
    """The file LAYOUTS[name] describes, and the arrays as diagnose should read them: NCHW, features (N, F, 1, 1)."""
    suffix, store, keras, _, _ = LAYOUTS[name]
    train_x, train_y, test_x, test_y = images(channels=1 if name == "npz-hw-uint8" else 3)
    stored = store(train_x), store(test_x)
    path = save(tmp_path / f"{name}{suffix}", stored[0], train_y, stored[1], test_y, keras=keras)
    if stored[0].ndim == 2:  # features
        expected = tuple(x.reshape(*x.shape, 1, 1) for x in stored)
    elif stored[0].ndim == 3:
        expected = tuple(x[:, None] for x in stored)
    else:
        expected = tuple(x.transpose(0, 3, 1, 2) if "nhwc" in name else x for x in stored)
    return path, expected, (train_y, test_y)


def load(*overrides: str):
    """load_data as `diagnose train data=file OVERRIDES` runs it."""
    return load_data(compose_config(["data=file", *overrides, "device=cpu"]).data, CPU)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_numbers_read_are_the_arrays_written(name, tmp_path):
    path, (train_x, test_x), (train_y, test_y) = write(tmp_path, name)
    data = load(f"data.path={path}", "data.val_size=0")  # all training examples, in a fixed shuffled order
    assert data.test_x.dtype == (torch.uint8 if train_x.dtype == np.uint8 else torch.float32)
    assert np.array_equal(data.test_x.numpy(), test_x) and np.array_equal(data.test_y.numpy(), test_y)
    # the training examples are shuffled: each one read is one written, with its own label
    written = {(x.tobytes(), int(y)) for x, y in zip(train_x, train_y, strict=True)}
    read = {(x.numpy().tobytes(), int(y)) for x, y in zip(data.train_x, data.train_y, strict=True)}
    assert read == written and len(data.train_y) == len(train_y) and data.n_classes == 4


@pytest.mark.parametrize("name", ["npz-nhwc-float-keras", "npz-features-float"])
def test_float_inputs_are_centred_per_channel_as_numpy_computes_it(name, tmp_path):
    path, (train_x, test_x), _ = write(tmp_path, name)
    data = load(f"data.path={path}", "data.val_size=0")
    mean = train_x.astype(np.float64).mean(axis=(0, 2, 3))  # (C,): per feature for feature vectors
    std = train_x.astype(np.float64).std(axis=(0, 2, 3))
    assert data.mean.numpy() == pytest.approx(mean, rel=1e-5) and data.std.numpy() == pytest.approx(std, rel=1e-5)
    raw = to_input(data.test_x, data.mean, data.std, center=False)
    assert np.array_equal(raw.numpy(), test_x)  # float inputs as written, not divided by 255
    centred = to_input(data.test_x, data.mean, data.std, center=True)
    assert centred.numpy() == pytest.approx((test_x - mean[:, None, None]) / std[:, None, None], rel=1e-5, abs=1e-5)
    assert np.array_equal(data.test_x.numpy(), test_x)  # centring a batch leaves the resident data as it was


def test_the_validation_split_defaults_to_a_tenth_and_follows_val_size(tmp_path):
    path, _, _ = write(tmp_path, "npz-nchw-uint8")  # 96 training examples
    assert (len(load(f"data.path={path}").val_y), len(load(f"data.path={path}", "data.val_size=30").val_y)) == (9, 30)
    data = load(f"data.path={path}", "data.val_size=30", "data.subset=20", "data.test_subset=5")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (20, 30, 5)


def test_classes_come_from_the_labels_or_from_data_classes(tmp_path):
    x, y, test_x, test_y = images()
    path = save(tmp_path / "a.npz", x, y, test_x, test_y)
    assert load(f"data.path={path}").n_classes == 4
    data = load(f"data.path={path}", "data.classes=7")
    assert data.n_classes == 7 and "7 classes (data.classes)" in data.describe()
    model = build_model(compose_config(["data=file", *CNN]), data.shape, data.n_classes)
    assert model(torch.zeros(2, *data.shape)).shape == (2, 7)


def test_a_layout_that_cannot_be_told_apart_follows_data_layout(tmp_path):
    x = np.arange(2 * 3 * 8 * 3, dtype=np.float32).reshape(2, 3, 8, 3)  # the first and the last axis both 3
    path = save(tmp_path / "a.npz", x, np.array([0, 1]), x, np.array([1, 0]))
    assert load(f"data.path={path}", "data.val_size=0").test_x.shape == (2, 3, 8, 3)  # NCHW, and the line says so
    data = load(f"data.path={path}", "data.val_size=0", "data.layout=nhwc")
    assert np.array_equal(data.test_x.numpy(), x.transpose(0, 3, 1, 2)) and "NHWC, as data.layout says" in data.about


def test_a_target_returning_the_arrays_is_read_as_the_file_is(tmp_path, monkeypatch):
    (tmp_path / "my_arrays.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    data = np.load('data.npz')\n"
        "    return (data['train_x'], data['train_y']), (data['test_x'], data['test_y'])  # as Keras returns them\n")
    path, (train_x, test_x), (train_y, test_y) = write(tmp_path, "npz-nchw-uint8")
    path.rename(tmp_path / "data.npz")
    monkeypatch.chdir(tmp_path)  # found on the current directory, as the CLI finds it
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    data = load("data._target_=my_arrays.load", "data.val_size=0")
    assert np.array_equal(data.test_x.numpy(), test_x) and np.array_equal(data.test_y.numpy(), test_y)
    assert data.about.startswith("my_arrays.load(): 3x8x8 uint8 images")


def bad(tmp_path, spoil):
    """A file of good arrays that `spoil(arrays)` changes; its path."""
    arrays = dict(zip(("train_x", "train_y", "test_x", "test_y"), images(), strict=True))
    spoil(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


def spoil(key: str, change):
    return lambda arrays: arrays.update({key: change(arrays[key])})


def with_nan(x):
    x = x.astype(np.float32)
    x[5, 0, 1, 2] = np.nan
    return x


BAD_FILES = {  # name -> (how the file is spoilt, extra overrides, what the message must say)
    "a missing key": (lambda arrays: arrays.pop("test_y"), [], r"it has no test_y \(or y_test\); it holds train_x, "
                                                                r"train_y, test_x\."),
    "a label beyond data.classes": (spoil("test_y", lambda y: np.where(y == 3, 9, y)), ["data.classes=4"],
                                    r"test_y holds the label 9, but data.classes makes 4 classes, 0\.\.3"),
    "a negative label": (spoil("train_y", lambda y: y - 1), [], r"train_y holds the label -1 .*Map them to 0\.\.C-1"),
    "NaN in the inputs": (spoil("train_x", with_nan), [], r"train_x holds NaN or infinite values in 1 examples "
                                                           r"\(the first: example 5\)"),
    "infinity in the inputs": (spoil("test_x", lambda x: np.full(x.shape, np.inf, np.float32)), [],
                               r"test_x holds NaN or infinite values in 32 examples"),
    "train and test shapes differ": (spoil("test_x", lambda x: x[:, :, :6, :6]), [],
                                     r"an example of train_x is \(3, 8, 8\) but one of test_x \(3, 6, 6\)"),
    "fewer labels than inputs": (spoil("train_y", lambda y: y[:90]), [],
                                 r"train_x has 96 examples but train_y 90 labels"),
    "labels that are not whole numbers": (spoil("train_y", lambda y: y + 0.5), [],
                                          r"train_y holds 0\.5 \(example 0\); labels are whole numbers"),
    "one-hot labels": (spoil("test_y", lambda y: np.eye(4)[y]), [], r"test_y is \(32, 4\); .* One-hot\?"),
    "images whose channels cannot be told": (
        lambda arrays: arrays.update(train_x=np.zeros((96, 5, 6, 7), np.uint8), test_x=np.zeros((32, 5, 6, 7))),
        [], r"the images are \(96, 5, 6, 7\), and neither the axis after N nor the last one has 1, 3 or 4 entries"),
    "augmenting feature vectors": (lambda arrays: arrays.update(train_x=flat(arrays["train_x"]),
                                                                test_x=flat(arrays["test_x"])),
                                   ["data.augment=true"], r"data.augment crops and flips images"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_the_file_and_what_to_fix(case, tmp_path):
    change, extra, message = BAD_FILES[case]
    path = bad(tmp_path, change)
    with pytest.raises(UserError) as raised:
        load(f"data.path={path}", *extra)
    said = str(raised.value)
    assert said.startswith(f"data.path={path}: ") and re.search(message, said), said
    assert "\n" not in said and len(said) < 600


def not_a_dict_of_tensors(tmp_path):
    torch.save({"train_x": [object()]}, tmp_path / "a.pt")
    return "a.pt", r"holds objects other than tensors, which torch.load\(weights_only=True\) refuses"


def one_array(tmp_path):
    np.save(tmp_path / "a.npz", np.zeros(3))  # numpy.save writes a.npz.npy; renamed, it is not an archive
    (tmp_path / "a.npz.npy").rename(tmp_path / "a.npz")
    return "a.npz", r"it is one array \(numpy.save\); save named arrays with numpy.savez"


def truncated(tmp_path):
    path = save(tmp_path / "a.pt", *images())
    path.write_bytes(path.read_bytes()[:200])
    return "a.pt", r"torch.load cannot read it \(.*\)\. Is it complete"


BAD_PATHS = {  # name -> what writes the file and returns (data.path, what the message must say)
    "a path that does not exist": lambda tmp_path: ("nothere.npz", r"there is no such file \(a relative path is "
                                                                   r"read from .*\)"),
    "another kind of file": lambda tmp_path: ("data.csv", r"this one ends in '\.csv'"),
    "a pickle that is not a dict of tensors": not_a_dict_of_tensors,
    "numpy.save instead of numpy.savez": one_array,
    "a truncated file": truncated,
}


@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_a_file_that_cannot_be_read_is_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, message = BAD_PATHS[case](tmp_path)
    with pytest.raises(UserError) as raised:
        load(f"data.path={path}")
    said = str(raised.value)
    assert said.startswith(f"data.path={path}: ") and re.search(message, said), said
    assert "\n" not in said


TARGETS = {  # name -> (data._target_, what the message must say)
    "no such module": ("no_such_module.load", r"no module no_such_module was found in .* or on PYTHONPATH"),
    "no such function": ("loaders.nothing", r"loaders \(.*loaders\.py\) has no nothing\. It defines: nothing_useful, "
                                            r"raises\."),
    "a module that fails to import": ("broken.load", r"importing broken raised ZeroDivisionError: division by zero "
                                                      r"\(.*broken\.py, line 1\)"),
    "a function that raises": ("loaders.raises", r"calling loaders\.raises\(\) raised KeyError: 'x' "
                                                 r"\(.*loaders\.py, line 3\)"),
    "not callable": ("loaders.NUMBER", r"is not callable \(its type: int\)"),
    "returns something else": ("loaders.nothing_useful", r"it holds a str; diagnose takes a dict of"),
    "not module.function": ("load", r"name it as module\.name"),
}


@pytest.mark.parametrize("case", sorted(TARGETS))
def test_a_target_that_cannot_be_imported_or_called_is_one_line(case, tmp_path, monkeypatch):
    (tmp_path / "loaders.py").write_text("NUMBER = 3\ndef raises():\n    return {}['x']\n"
                                         "def nothing_useful():\n    return 'arrays'\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("loaders", "broken"):  # another test's module of that name must not stand in
        monkeypatch.delitem(sys.modules, name, raising=False)
    target, message = TARGETS[case]
    with pytest.raises(UserError) as raised:
        load(f"data._target_={target}")
    said = str(raised.value)
    assert said.startswith(f"data._target_={target}") and re.search(message, said), said
    assert "\n" not in said


@pytest.mark.parametrize(("given", "message"), [([], "neither was given"),
                                                (["data.path=a.npz", "data._target_=m.load"], "both were given")])
def test_a_file_and_a_target_are_one_or_the_other(given, message):
    with pytest.raises(UserError, match=message):
        load(*given)


def test_a_cnn_on_feature_vectors_says_to_train_an_mlp(tmp_path):
    path, _, _ = write(tmp_path, "npz-features-float")
    data = load(f"data.path={path}")
    with pytest.raises(UserError, match="model=cnn needs images, but each input here is a vector of 192 numbers"):
        build_model(compose_config(["data=file", *CNN]), data.shape, data.n_classes)


def trained_on(result, tmp_path) -> dict:
    """The run's metrics.json, once it completed."""
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "outputs").glob("*/*/metrics.json")
    completed = json.loads(metrics.read_text())
    assert completed["status"] == "completed"
    return completed


def test_readmes_example_trains_and_prints_the_line_readme_shows(tmp_path, monkeypatch):
    """README's *Your data*: its Python lines write the file, its command trains on it (shrunk to 4 steps), and the
    run's first line is the one README shows."""
    code, command, line = re.findall(r"```\n(.*?)```", README.split("**Your data**")[1], flags=re.S)[:3]
    monkeypatch.chdir(tmp_path)
    exec(code, {})  # noqa: S102 - README's own lines
    result = run_cli([*command.split()[1:], *SHORT], tmp_path)
    metrics = trained_on(result, tmp_path)
    assert result.stderr.splitlines()[0] == line.strip()
    assert metrics["config"]["data"]["path"] == "mydata.npz"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_trains_end_to_end(name, tmp_path, monkeypatch, capfd):
    """In this process (the command line's own path is README's example and the target's, below): the run's data
    line says what was assumed, and it trains to the end."""
    path, _, _ = write(tmp_path, name)
    monkeypatch.chdir(tmp_path)  # data.path is read where the command runs
    config = compose_config(["data=file", f"data.path={path.name}", *LAYOUTS[name][3], *SHORT])
    metrics = train_run(build_run(config), tmp_path / "run", to_dict(config))
    assert metrics.status == "completed" and metrics.steps == 4
    assert f"data: {name}{LAYOUTS[name][0]}: {LAYOUTS[name][4]}" in capfd.readouterr().err


@pytest.mark.slow
def test_a_target_trains_end_to_end(tmp_path):
    (tmp_path / "mine.py").write_text("import numpy as np\n"
                                      "def load():\n"
                                      "    return dict(np.load('data.npz'))\n")
    path, _, _ = write(tmp_path, "npz-nhwc-float-keras")
    path.rename(tmp_path / "data.npz")
    result = run_cli(["train", "data=file", "data._target_=mine.load", *CNN, *SHORT], tmp_path)
    trained_on(result, tmp_path)
    assert result.stderr.startswith("data: mine.load(): 3x8x8 float images (NHWC as detected")


@pytest.mark.parametrize("args", [["data.path=nothere.npz"], ["data._target_=no_such_module.load"]],
                         ids=["a missing file", "a missing target"])
def test_bad_data_exits_2_with_one_line_and_no_run_folder(args, tmp_path):
    result = run_cli(["train", "data=file", *args, *SHORT], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"Error: {args[0]}: ") and "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists(), "a failed run must not leave a run folder behind"
