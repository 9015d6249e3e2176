"""Which modules of a model are measured, and what kind each is; found by `named_modules()` names."""

from dataclasses import dataclass

from torch import nn

from diagnose.components.activations import Maxout

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
# Units of these can be "dead": output <= 0 for every input (exactly zero for a ReLU).
RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU)
SATURATING = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
ACTIVATIONS = (*RELU_LIKE, *SATURATING, Maxout, nn.Identity)


@dataclass(frozen=True)
class Layer:
    name: str  # e.g. features.2.act: stable, so TensorBoard tags are too
    module: nn.Module
    role: str  # "weight" (conv/linear), "norm" or "act"
    kind: str  # the module's kind: "relu_like", "sigmoid", "tanh", "batchnorm", or its role


def measured_layers(model: nn.Module) -> list[Layer]:
    """Every conv/linear, normalisation and activation output, in forward order."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            layers.append(Layer(name, module, "weight", "weight"))
        elif isinstance(module, NORM_TYPES):
            kind = "batchnorm" if isinstance(module, nn.modules.batchnorm._BatchNorm) else "norm"
            layers.append(Layer(name, module, "norm", kind))
        elif isinstance(module, ACTIVATIONS) and name.endswith(".act"):
            kind = "relu_like" if isinstance(module, RELU_LIKE) else SATURATING.get(type(module), "act")
            layers.append(Layer(name, module, "act", kind))
    return layers
