"""Which modules of a model are measured, and what kind each is; found by `named_modules()` names."""

from dataclasses import dataclass

from torch import nn

from diagnose.components.activations import Activation
from diagnose.components.norms import Norm


@dataclass(frozen=True)
class Layer:
    name: str  # e.g. features.2.act: stable, so TensorBoard tags are too
    module: nn.Module
    role: str  # "weight" (conv/linear), "norm" or "act"
    kind: str  # an activation's or norm's kind from its registry entry (e.g. relu_like, batch); "weight"
    entry: Activation | Norm | None = None  # the registry entry of a norm or activation


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
