"""Memory layout of a CNN: channels_last (NHWC) where it is measured to be faster than NCHW."""

import torch
from torch import nn

from diagnose.components.activations import Maxout
from diagnose.components.norms import BatchInstanceNorm

# Layers with which the whole net runs slower in channels_last (measured on a 2-core CPU, default CNN, training
# steps/s channels_last / NCHW at batch 8 and 128): instance norm, which reshapes each map to (1, B*C, H, W), a
# copy out of NHWC: 0.91x and 0.74x; BIN, which contains it: 0.98-1.02x and 0.89x; maxout's max over
# channel pieces: 0.8x and 0.54x.
SLOWER_IN_CHANNELS_LAST = (nn.InstanceNorm2d, BatchInstanceNorm, Maxout)


def prefers_channels_last(model: nn.Module, device: torch.device) -> bool:
    """On the CPU, oneDNN's convolutions are faster on NHWC maps: 1.1-1.55x per training step for the default
    CNN with BN, GN, LN or no norm, max/avg pooling or strided convs, fp32 or bf16. CUDA keeps NCHW: in fp32 its
    gain is not established and nothing here measured it."""
    modules = list(model.modules())
    return (device.type == "cpu"
            and any(isinstance(m, nn.Conv2d) for m in modules)
            and not any(isinstance(m, SLOWER_IN_CHANNELS_LAST) for m in modules))


def to_best_layout(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with its 4-D weights in the faster layout; its first conv then emits NHWC maps, and every
    later layer keeps that layout, so the input batch needs no conversion."""
    if prefers_channels_last(model, device):
        return model.to(memory_format=torch.channels_last)
    return model
