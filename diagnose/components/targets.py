"""The user's own classes on the command line, Hydra's way: `model._target_=mynets.ResNet8` (and `act._target_`,
`norm._target_`, `loss._target_`). The schema of such an option, how its class is imported, and what the rest of
the package gets for it: a built model, or a registry-like entry (Activation, Norm) whose kind is measured.

The project's own components keep their short names (`act=gelu`); `_target_` is for what the project has never seen.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from diagnose import checks, user_code
from diagnose.errors import UserError
from diagnose.kinds import IDENTITY, RELU_LIKE, SATURATING, SMOOTH
from diagnose.lazy import later
from diagnose.registry import Options

torch, nn = later("torch"), later("torch.nn")  # imported when a target is built
measured = later("diagnose.components.measured")

TARGET = "target"  # the option name of a `_target_` in each group that takes one
TARGET_GROUPS = ("model", "act", "norm", "loss")
ACT_KINDS = (RELU_LIKE, SATURATING, SMOOTH, IDENTITY)


@dataclass
class Target(Options):
    """`<group>._target_=pkg.module.Class`: the user's class, called with `args` as keywords (`model.width=32` on
    the command line is `model.args.width=32`)."""

    name: str = TARGET
    _target_: str | None = None  # import path: found on the current directory or PYTHONPATH
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActTarget(Target):
    kind: str | None = None  # relu_like, saturating, smooth or identity: instead of what measuring it finds

    def __post_init__(self) -> None:
        if self.kind is not None:
            checks.one_of("act.kind", self.kind, ACT_KINDS)


@dataclass
class ModelTarget(Target):
    act_kind: str | None = None  # the kind of the activations in it the tool does not know, instead of measuring

    def __post_init__(self) -> None:
        if self.act_kind is not None:
            checks.one_of("model.act_kind", self.act_kind, ACT_KINDS)


SCHEMAS: dict[str, type[Target]] = {"model": ModelTarget, "act": ActTarget, "norm": Target, "loss": Target}
DECLARED = {"name", "_target_", "args", "kind", "act_kind"}  # keys of a target option that are not its arguments


def is_target(options: Any) -> bool:
    return isinstance(options, Target)


def locate(group: str, path: str | None) -> Any:
    """The object `path` names, imported as `python -m` would find it (the current directory first, then
    PYTHONPATH); a UserError naming what was tried."""
    if not path or "." not in path:
        raise UserError(f"{group}={TARGET} needs {group}._target_=<module>.<Class>, the import path of your class "
                        f"(e.g. {group}._target_=mynets.{_example(group)}); got {path!r}.")
    return user_code.locate(f"{group}._target_", path)


def find_class(group: str, path: str) -> type:
    """The nn.Module class `<group>._target_=path` names; a UserError where there is none to import."""
    return _module_class(group, path, locate(group, path))


def _example(group: str) -> str:
    return {"model": "ResNet8", "act": "Swish", "norm": "MyNorm", "loss": "MyLoss"}[group]


def _module_class(group: str, path: str, found: Any) -> type:
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        raise UserError(f"{group}._target_={path} is {_what(found)}, not a torch.nn.Module class: give the class "
                        f"of your {'network' if group == 'model' else group} (a subclass of nn.Module).")
    return found


def _what(found: Any) -> str:
    return f"a class ({found.__name__})" if inspect.isclass(found) else f"a {type(found).__name__}"


def construct(group: str, path: str, cls: type, *args: Any, **kwargs: Any) -> Any:
    """`cls(*args, **kwargs)`; what it raises is the user's, said in one line."""
    try:
        return cls(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the user's constructor
        called = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise UserError(f"{group}._target_={path}: {cls.__name__}({called}) raised {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}".rstrip(": ") + ".") from None


def build_target_model(options: ModelTarget, shape: tuple[int, int, int], n_classes: int) -> Any:
    """The user's network. Its constructor gets `options.args`, and `in_shape` (one input's (C, H, W)) and
    `n_classes` where its signature takes them (by name, or **kwargs): how the data's shape reaches it. Its output
    for a batch must be (batch, n_classes) logits; that is checked on two examples, BN's statistics left as they were.
    """
    cls = find_class("model", options._target_)
    given = dict(options.args)
    accepts = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepts.values())
    for key, value in (("in_shape", tuple(shape)), ("n_classes", n_classes)):
        if key not in given and (key in accepts or takes_any):
            given[key] = value
    model = construct("model", options._target_, cls, **given)
    from diagnose.models.modes import batch_statistics

    x = torch.randn(2, *shape)
    try:
        with torch.no_grad(), batch_statistics(model):
            out = model(x)
    except Exception as err:  # noqa: BLE001 - the user's forward
        raise UserError(f"model._target_={options._target_}: its forward on a batch of 2 inputs of shape "
                        f"{tuple(shape)} raised {type(err).__name__}: {str(err).splitlines()[0]}. It gets "
                        f"in_shape={tuple(shape)} and n_classes={n_classes} when its constructor takes them.") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model._target_={options._target_} returns {got} for a batch of 2 inputs of shape "
                        f"{tuple(shape)}; the data has {n_classes} classes, so it must return (2, {n_classes}) "
                        f"logits. Take n_classes (and in_shape) as constructor arguments to fit any data.")
    return model


def target_activation(options: ActTarget) -> Any:
    """An Activation entry for the user's activation class, called with `options.args`: its kind measured on a
    grid (or `act.kind`), its init gain 1/sqrt(E[f(z)^2]) as for the registry's own."""
    from diagnose.components.activations import Activation

    path = options._target_
    cls = find_class("act", path)
    module = construct("act", path, cls, **options.args)
    shape = measured.activation_shape(module, path)
    kind = options.kind or shape.kind
    # make and gain take the option's settings as the registry's do (registry.make), and ignore them: args are given
    return Activation(make=lambda **_: construct("act", path, cls, **options.args), kind=kind,
                      gain=lambda **_: measured.gain(module), saturated=shape.saturated if kind == SATURATING else None,
                      init="a variance-preserving init", instead="another activation", channels_last=False)


def target_norm(options: Target) -> Any:
    """A Norm entry for the user's norm class, called with the channel count (and `options.args`) for a conv map
    or a vector alike: its kind (batch statistics or per-example) measured on a batch."""
    from diagnose.components.norms import Norm

    path = options._target_
    cls = find_class("norm", path)
    module = construct("norm", path, cls, 8, **options.args)
    kind = measured.norm_kind(module, path)
    return Norm(make=lambda channels, spatial, **_: construct("norm", path, cls, channels, **options.args), kind=kind,
                channels_last=False)


def target_loss(options: Target) -> Any:
    """The user's loss module, called with `options.args`; it takes (logits, integer labels)."""
    path = options._target_
    return construct("loss", path, find_class("loss", path), **options.args)

