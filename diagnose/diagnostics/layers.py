"""Which modules of a model are measured, and what kind each is; found by `named_modules()` names.

The tool's own models declare theirs (`measured_layers`: the `act` and `norm` children of their blocks). Any other
network has them discovered (`discover_layers`): one forward with hooks records which modules run, in which order,
and on what; convolutions and linears are weight layers, norms and activations are found by type, and a module the
tool does not know is classified by measuring it (components/measured.py).
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from diagnose.components import measured
from diagnose.components.activations import ACTIVATIONS, Activation
from diagnose.components.layers import Maxout
from diagnose.components.norms import Norm
from diagnose.kinds import BATCH, EXAMPLE, SATURATING
from diagnose.models.modes import untouched_random_state


@dataclass(frozen=True)
class Layer:
    name: str  # e.g. features.2.act: stable, so TensorBoard tags are too
    module: nn.Module
    role: str  # "weight" (conv/linear), "norm" or "act"
    kind: str  # an activation's or norm's kind from its registry entry (e.g. relu_like, batch); "weight"
    entry: Activation | Norm | None = None  # the registry entry of a norm or activation (or one made by measuring)


def measured_layers(model: nn.Module, act: Activation, norm: Norm) -> list[Layer]:
    """Every conv/linear, normalisation and activation output, in forward order. Norms and activations are the
    `norm` and `act` children of the model's blocks (models/blocks.py), built from the entries `norm`, `act`."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            layers.append(Layer(name, module, "weight", "weight"))
        elif name.endswith(".norm"):
            layers.append(Layer(name, module, "norm", norm.kind, norm))
        elif name.endswith(".act"):
            layers.append(Layer(name, module, "act", act.kind, act))
    return layers


@dataclass(frozen=True)
class Discovery:
    layers: list[Layer]  # in the order they run
    unseen: str | None  # what the hooks cannot see (activations called as functions), said once; None: nothing


WEIGHTS = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)
# torch's norms by type: whose statistics they normalise with (BatchInstanceNorm is a _BatchNorm)
NORM_TYPES = ((nn.modules.batchnorm._BatchNorm, BATCH), (nn.SyncBatchNorm, BATCH), (nn.GroupNorm, EXAMPLE),
              (nn.LayerNorm, EXAMPLE), (nn.modules.instancenorm._InstanceNorm, EXAMPLE),
              (nn.LocalResponseNorm, EXAMPLE), (nn.RMSNorm, EXAMPLE))
# torch's activations that are registry options: their entry (kind, saturation rule, remedies); others are measured
ACT_TYPES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
             nn.GELU: "gelu", Maxout: "maxout"}
# modules that keep their input's shape but are no activation: never measured as one
NOT_ACTS = (nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax)
# what an activation called as a function is called, by torch's function name (F.relu, torch.tanh, x.relu(), ...)
ACT_FUNCTIONS = {"relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu",
                 "silu", "mish", "softplus", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_",
                 "hardswish", "hardsigmoid", "softsign", "logsigmoid", "prelu"}


@dataclass
class _Call:
    """A module's first call in the forward, and what it saw."""

    name: str
    module: nn.Module
    x: Any  # its first positional input's first two examples, cloned (an in-place activation overwrites it)


class _ActivationCalls(TorchFunctionMode):
    """Records each activation function called during a forward, with the modules running at the time."""

    def __init__(self, running: list[str], done: list[_Call]):
        super().__init__()
        self.running, self.done = running, done
        self.calls: list[tuple[str, tuple[str, ...], int]] = []  # (function, running modules, modules finished)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in ACT_FUNCTIONS:
            self.calls.append((name, tuple(self.running), len(self.done)))
        return func(*args, **(kwargs or {}))


def _record(model: nn.Module, example: torch.Tensor) -> tuple[list[_Call], _ActivationCalls]:
    """One forward with hooks on every leaf module (and every norm or activation of a known type, which may have
    children): which ran, in which order, on what. Parameters, buffers (BN's running statistics) and the random
    streams are left exactly as they were."""
    candidates = {name: m for name, m in model.named_modules()
                  if m is not model and (not any(True for _ in m.children()) or _known(m))}
    running: list[str] = []
    started: dict[str, _Call] = {}
    done: list[_Call] = []  # in the order they first finished: the run order (a leaf finishes before the next runs)

    def before(module: nn.Module, args: tuple, name: str) -> None:
        running.append(name)
        if name not in started:
            first = args[0] if args else None
            # two examples are all the measurements need (a norm's batch dependence, an elementwise map): kept small
            kept = first[:2].detach().clone() if isinstance(first, torch.Tensor) and first.ndim else None
            started[name] = _Call(name, module, kept)

    def after(module: nn.Module, args: tuple, out: Any, name: str) -> None:
        running.pop()
        if all(c.name != name for c in done):
            done.append(started[name])

    handles = []
    for name, module in candidates.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: before(m, a, name)))
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: after(m, a, o, name)))
    state = {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()}
    calls = _ActivationCalls(running, done)
    try:
        with torch.no_grad(), untouched_random_state(example.device), calls:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                value.copy_(state[key])
    return done, calls


def _known(module: nn.Module) -> bool:
    return isinstance(module, (*WEIGHTS, *(t for t, _ in NORM_TYPES), *ACT_TYPES))


def _norm_kind(call: _Call) -> str | None:
    """BATCH or EXAMPLE for a norm: by torch's type, or, for a module whose class is named like one (MyNorm,
    RMSNormalization), by measuring whether its output for one example depends on the batch; None: no norm."""
    for kind_of, kind in NORM_TYPES:
        if isinstance(call.module, kind_of):
            return kind
    if "norm" in type(call.module).__name__.lower() and isinstance(call.x, torch.Tensor) and call.x.ndim >= 2:
        return BATCH if measured.depends_on_batch(call.module, call.x) else EXAMPLE
    return None


def _activation(call: _Call, act_kind: str | None) -> Activation | None:
    """The registry entry of a known activation; for an unknown module that maps each entry on its own (and has
    no weights), one made from its measured shape, its kind `act_kind` where given; None: no activation."""
    for kind_of, name in ACT_TYPES.items():
        if type(call.module) is kind_of:
            return ACTIVATIONS[name]
    module = call.module
    if isinstance(module, NOT_ACTS) or not isinstance(call.x, torch.Tensor) or any(True for _ in module.children()):
        return None
    if any(p.numel() > 1 for p in module.parameters()) or not measured.is_elementwise(module, call.x):
        return None  # PReLU's one slope is fine; a layer with weights per unit is not an elementwise activation
    shape = measured.activation_shape(module, type(module).__name__)
    kind = act_kind or shape.kind
    return Activation(make=None, gain=lambda: measured.gain(module), kind=kind,
                      saturated=shape.saturated if kind == SATURATING else None,
                      init="a variance-preserving init", instead="another activation")


def discover_layers(model: nn.Module, example: torch.Tensor, act_kind: str | None = None) -> Discovery:
    """The layers of any network, in the order they run on `example` (residual and branching models alike):
    conv/linear -> "weight", norms -> "norm", activations -> "act" (unknown ones classified by measuring them;
    `act_kind` overrides what it finds). Runs one forward; the model is left exactly as it was."""
    calls, functions = _record(model, example)
    layers: list[Layer] = []
    for call in calls:
        if isinstance(call.module, WEIGHTS):
            layers.append(Layer(call.name, call.module, "weight", "weight"))
        elif (kind := _norm_kind(call)) is not None:
            layers.append(Layer(call.name, call.module, "norm", kind, Norm(make=None, kind=kind)))
        elif (act := _activation(call, act_kind)) is not None:
            layers.append(Layer(call.name, call.module, "act", act.kind, act))
    return Discovery(layers, _unseen(layers, calls, functions))


def _unseen(layers: list[Layer], calls: list[_Call], functions: _ActivationCalls) -> str | None:
    """One sentence on the activations called as functions outside any activation module, which no hook sees:
    which, where, and the layers whose outputs are measured in their place (the last weight or norm layer to finish
    before each call)."""
    measured_roles = {layer.name: layer.role for layer in layers}
    hidden, instead = [], []
    for function, running, finished in functions.calls:
        if any(name in measured_roles for name in running):
            continue  # inside an activation module (its output is measured), or part of a norm's or a layer's work
        before = next((c.name for c in reversed(calls[:finished]) if measured_roles.get(c.name) in ("weight", "norm")),
                      None)
        if function not in hidden:
            hidden.append(function)
        if before and before not in instead:
            instead.append(before)
    if not hidden:
        return None
    where = f"the outputs of {', '.join(instead)} are measured in their place" if instead else "nothing stands in"
    return (f"Your model calls {', '.join(hidden)} as a function inside forward(), which hooks cannot see: {where} "
            f"(no dead-unit or saturation figures for those activations). Make them modules (nn.ReLU(), ...) "
            f"to have them measured.")


def depth_labels(layers: list[Layer]) -> dict[str, str]:
    """Each layer's name in TensorBoard: its place among the layers of its role, zero-padded, then its module name
    ('03 features.4.act'). TensorBoard sorts a chart's lines, legend and tooltip as strings: so they read in forward
    order (features.10 would come before features.2)."""
    counts = {role: sum(layer.role == role for layer in layers) for role in {layer.role for layer in layers}}
    seen: dict[str, int] = {}
    labels = {}
    for layer in layers:
        seen[layer.role] = seen.get(layer.role, 0) + 1
        width = max(2, len(str(counts[layer.role])))
        labels[layer.name] = f"{seen[layer.role]:0{width}d} {layer.name}"
    return labels
