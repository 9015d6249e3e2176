"""Memory layout of a CNN: channels_last (NHWC) where it is measured to be faster than NCHW."""

import torch
from torch import nn

from diagnose.components.activations import Activation
from diagnose.components.norms import Norm


def prefers_channels_last(model: nn.Module, device: torch.device, act: Activation, norm: Norm) -> bool:
    """On the CPU, oneDNN's convolutions are faster on NHWC maps: 1.1-1.55x per training step for the default
    CNN with BN, GN, LN or no norm, max/avg pooling or strided convs, fp32 or bf16, unless a layer is slower in
    it (the components that are say so in their registry entries). CUDA keeps NCHW: in fp32 its gain is not
    established and nothing here measured it."""
    return (device.type == "cpu" and act.channels_last and norm.channels_last
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))


def to_best_layout(model: nn.Module, device: torch.device, act: Activation, norm: Norm) -> nn.Module:
    """The model with its 4-D weights in the faster layout; its first conv then emits NHWC maps, and every
    later layer keeps that layout, so the input batch needs no conversion."""
    if prefers_channels_last(model, device, act, norm):
        return model.to(memory_format=torch.channels_last)
    return model
