"""Your data (data=file): arrays from a .npz or .pt file, or returned by a function of yours, checked as the published
datasets are and laid out as they are: (N, C, H, W) images, uint8 or float32, and feature vectors as (N, F, 1, 1), so
that batching, centring per channel (here: per feature) and the MLP take them unchanged."""

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diagnose.data.datasets import RawData
from diagnose.errors import UserError
from diagnose.user_code import first_line, locate, said

# Each array's name, and the other spelling accepted for it: Keras's (keras.datasets.*.load_data() and its mnist.npz).
KEYS = {"train_x": "x_train", "train_y": "y_train", "test_x": "x_test", "test_y": "y_test"}
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: the sizes of an axis that auto layout takes for channels
_HOLDS = ("train_x, train_y, test_x, test_y (or x_train, y_train, x_test, y_test): inputs (N, features), (N, H, W) or "
          "NCHW/NHWC images, uint8 or float, and labels (N,), whole numbers from 0")


def read_arrays(path: str | None, target: str | None, *, layout: str, classes: int | None,
                augment: bool) -> RawData:
    """The arrays of `path` (.npz, or .pt: a dict of tensors) or of `target()`, checked as a UserError that names the
    file and what to fix; images as (N, C, H, W) and features as (N, F, 1, 1)."""
    if (path is None) == (target is None):
        given = "both were" if path else "neither was"
        raise UserError(f"data=file reads your arrays from data.path=<a .npz or .pt file> or from "
                        f"data._target_=<module.function> returning them; {given} given. Give one.")
    if path is not None:
        name, source = path, f"data.path={path}"
        arrays = _read_file(Path(path).expanduser(), source)
    else:
        name, source = f"{target}()", f"data._target_={target}"
        arrays = _named(_call(target), source)
    tensors = {key: _tensor(value, key, source) for key, value in arrays.items()}
    y, test_y = (_labels(tensors[key], key, source) for key in ("train_y", "test_y"))
    x, test_x = (_inputs(tensors[key], key, source) for key in ("train_x", "test_x"))
    for part, inputs, labels in (("train", x, y), ("test", test_x, test_y)):
        if len(inputs) != len(labels):
            raise UserError(f"{source}: {part}_x has {len(inputs)} examples but {part}_y {len(labels)} labels; each "
                            f"example needs one label.")
    if x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"{source}: an example of train_x is {tuple(x.shape[1:])} but one of test_x "
                        f"{tuple(test_x.shape[1:])}; train and test examples must have one shape.")
    n_classes, classes_note = _classes({"train_y": y, "test_y": test_y}, classes, source)
    kind = "uint8" if x.dtype == torch.uint8 else "float"
    channels_last, shape_note = _layout(tuple(x.shape), kind, layout, augment, source)
    x, test_x = (_as_nchw(inputs, channels_last) for inputs in (x, test_x))
    return RawData(x, y, test_x, test_y, n_classes, f"{name}: {shape_note}, {classes_note}")


def _read_file(path: Path, source: str) -> dict[str, Any]:
    if path.suffix not in (".npz", ".pt", ".pth"):
        raise UserError(f"{source}: diagnose reads .npz files (numpy.savez) and .pt files (torch.save of a dict of "
                        f"tensors); this one ends in '{path.suffix}'. Save your arrays as one of those.")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (a relative path is read from {Path.cwd()}, where diagnose runs)"
        raise UserError(f"{source}: there is no such file{where}. Give the path of a .npz or .pt file holding "
                        f"{_HOLDS}.")
    if path.suffix == ".npz" and not zipfile.is_zipfile(path):  # numpy.savez writes a zip archive of .npy files
        with path.open("rb") as file:
            held = "one array (numpy.save)" if file.read(6) == b"\x93NUMPY" else "no .npz archive"
        raise UserError(f"{source}: it is {held}; save named arrays with numpy.savez(path, train_x=..., "
                        f"train_y=..., test_x=..., test_y=...).")
    try:
        if path.suffix == ".npz":
            # no pickles: an object array could run code; each array is read from the archive when _named asks
            with np.load(path, allow_pickle=False) as loaded:
                return _named(loaded, source)
        return _named(torch.load(path, map_location="cpu", weights_only=True), source)
    except UserError:
        raise
    except pickle.UnpicklingError:
        raise UserError(f"{source}: it holds objects other than tensors, which torch.load(weights_only=True) refuses "
                        f"(unpickling them could run code). Save a dict of tensors: torch.save({{'train_x': ..., "
                        f"'train_y': ..., 'test_x': ..., 'test_y': ...}}, path).") from None
    except Exception as err:  # noqa: BLE001 - any parse failure of a user's file means the same to the user
        reader = "numpy.load" if path.suffix == ".npz" else "torch.load"
        raise UserError(f"{source}: {reader} cannot read it ({type(err).__name__}: {first_line(err)}). Is it "
                        f"complete, and saved by {'numpy.savez' if path.suffix == '.npz' else 'torch.save'}?") from None


def _named(arrays: object, source: str) -> dict[str, Any]:
    """The four arrays by their names: from a mapping (either spelling), or Keras's ((x, y), (x, y))."""
    if isinstance(arrays, tuple | list) and len(arrays) == 2 and all(
            isinstance(part, tuple | list) and len(part) == 2 for part in arrays):
        (train_x, train_y), (test_x, test_y) = arrays
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    if not isinstance(arrays, Mapping):
        raise UserError(f"{source}: it holds a {type(arrays).__name__}; diagnose takes a dict of {_HOLDS}, or "
                        f"((train_x, train_y), (test_x, test_y)).")
    found, missing = {}, []
    for key, other in KEYS.items():
        present = [name for name in (key, other) if name in arrays]
        if len(present) == 2:
            raise UserError(f"{source}: it holds both {key} and {other}; keep one of them.")
        if present:
            found[key] = arrays[present[0]]
        else:
            missing.append(f"{key} (or {other})")
    if missing:
        held = ", ".join(str(name) for name in arrays) or "nothing"
        raise UserError(f"{source}: it has no {', '.join(missing)}; it holds {held}. It must hold {_HOLDS}.")
    return found


def _tensor(value: object, name: str, source: str) -> torch.Tensor:
    """`value` as a CPU tensor of bool, integers or floats."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.is_quantized:
            raise UserError(f"{source}: {name} is a {value.dtype} tensor; diagnose takes real numbers.")
        return value.detach().cpu()
    try:
        array = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
    except ValueError:  # ragged lists
        array = None
    if array is None or array.dtype.kind not in "biuf":
        kind = f"an array of {array.dtype}" if array is not None else f"a {type(value).__name__}"
        raise UserError(f"{source}: {name} is {kind}; diagnose takes arrays of numbers.")
    if array.dtype.kind in "iu" and array.dtype != np.uint8:
        array = array.astype(np.int64)  # torch lacks some unsigned types
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array))


def _inputs(x: torch.Tensor, name: str, source: str) -> torch.Tensor:
    """uint8 kept as bytes (x/255 when batched, as the published images); anything else float32, finite."""
    if x.ndim < 2 or len(x) == 0:
        raise UserError(f"{source}: {name} is {tuple(x.shape)}; inputs are N > 0 examples, each a vector or an image: "
                        f"(N, features), (N, H, W), (N, C, H, W) or (N, H, W, C).")
    if x.dtype == torch.uint8:
        return x
    x = x.float()
    finite = torch.isfinite(x.reshape(len(x), -1)).all(1)  # (N,)
    if not bool(finite.all()):
        raise UserError(f"{source}: {name} holds NaN or infinite values in {int((~finite).sum())} examples (the first: "
                        f"example {int((~finite).nonzero()[0])}). Remove or repair those examples.")
    return x


def _labels(y: torch.Tensor, name: str, source: str) -> torch.Tensor:
    """(N,) int64 class indices, from whole numbers of any dtype."""
    if y.ndim == 2 and y.shape[1] == 1:  # Keras's CIFAR labels are (N, 1)
        y = y[:, 0]
    if y.ndim != 1:
        hint = " One-hot? Store each example's class index (argmax over the last axis)." if y.ndim == 2 else ""
        raise UserError(f"{source}: {name} is {tuple(y.shape)}; labels are (N,), one class index per example.{hint}")
    if y.is_floating_point():
        whole = torch.isfinite(y) & (y == y.round())
        if not bool(whole.all()):
            first = int((~whole).nonzero()[0])
            raise UserError(f"{source}: {name} holds {y[first].item():g} (example {first}); labels are whole numbers, "
                            f"each example's class index from 0.")
    return y.long()


def _classes(labels: dict[str, torch.Tensor], classes: int | None, source: str) -> tuple[int, str]:
    """(the number of classes, how it was found), once every label is in 0..classes-1."""
    for name, y in labels.items():
        if len(y) and int(y.min()) < 0:
            first = int((y < 0).nonzero()[0])
            raise UserError(f"{source}: {name} holds the label {int(y[first])} (example {first}); labels count classes "
                            f"from 0. Map them to 0..C-1.")
    how, note = "data.classes", ""
    if classes is None:  # from the training labels: a test label beyond them is a class the model never saw
        how, classes = "the largest label of train_y + 1", int(labels["train_y"].max()) + 1
        if classes == 1:
            raise UserError(f"{source}: every label of train_y is 0; a classifier needs 2 classes or more.")
        present = set(labels["train_y"].unique().tolist())
        missing = [c for c in range(min(classes, len(present) + 3)) if c not in present][:3]
        if missing:  # labels counted from 1, say
            note = f"; no training example of class {', '.join(map(str, missing))}"
    name, largest = max(((name, int(y.max())) for name, y in labels.items()), key=lambda pair: pair[1])
    if largest >= classes:
        raise UserError(f"{source}: {name} holds the label {largest}, but {how} makes {classes} classes, "
                        f"0..{classes - 1}. Set data.classes to the number of classes, or fix the labels.")
    return classes, f"{classes} classes ({how}{note})"


def _layout(shape: tuple[int, ...], kind: str, layout: str, augment: bool, source: str) -> tuple[bool, str]:
    """(whether the channels come last, one phrase: what the inputs are and what was assumed) for `kind` (uint8 or
    float) inputs of `shape`."""
    each = shape[1:]
    if len(each) == 1:  # feature vectors
        if augment:
            raise UserError(f"{source}: data.augment crops and flips images, but these inputs are vectors of "
                            f"{each[0]} features. Set data.augment=false.")
        return False, f"{each[0]} {kind} features per example"
    if len(each) == 2:  # Keras's MNIST: (N, H, W)
        return False, f"1x{each[0]}x{each[1]} {kind} images ((N, H, W): one channel)"
    if len(each) != 3:
        raise UserError(f"{source}: the inputs are {shape}; diagnose takes (N, features), (N, H, W), (N, C, H, W) or "
                        f"(N, H, W, C).")
    first, last = each[0] in CHANNELS, each[2] in CHANNELS
    if layout == "auto" and not (first or last):
        raise UserError(f"{source}: the images are {shape}, and neither the axis after N nor the last one has 1, 3 "
                        f"or 4 entries, so which one holds the channels is not clear. Say it: data.layout=nchw "
                        f"(channels first) or data.layout=nhwc (channels last).")
    channels_last = layout == "nhwc" or (layout == "auto" and not first)
    c, h, w = (each[2], each[0], each[1]) if channels_last else each
    if layout != "auto":
        how = f"{layout.upper()}, as data.layout says"
    elif first and last:
        how = "NCHW: either end axis could hold the channels, the first was taken; data.layout=nhwc if not"
    else:
        detected, other = ("NHWC", "nchw") if channels_last else ("NCHW", "nhwc")
        how = f"{detected} as detected; data.layout={other} if not"
    return channels_last, f"{c}x{h}x{w} {kind} images ({how})"


def _as_nchw(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, C, H, W) from (N, F), (N, H, W), NCHW or NHWC; features as (N, F, 1, 1)."""
    if x.ndim == 2:
        return x.reshape(*x.shape, 1, 1)
    if x.ndim == 3:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous() if channels_last else x


def _call(target: str) -> object:
    """What the function `target` returns, called without arguments."""
    function = locate("data._target_", target)
    if not callable(function):
        raise UserError(f"data._target_={target} is not callable (its type: {type(function).__name__}); name a "
                        f"function that returns your arrays.")
    try:
        return function()
    except Exception as err:  # noqa: BLE001 - the user's code: say where it failed, in one line
        raise UserError(f"data._target_={target}: calling {target}() raised {said(err)}. It is called without "
                        f"arguments and must return {_HOLDS}.") from None
