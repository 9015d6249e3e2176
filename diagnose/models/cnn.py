"""Convolutional net: stages of conv-norm-act blocks, downsampling between stages, GAP + linear head."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from diagnose.components.downsample import Downsample
from diagnose.errors import UserError
from diagnose.models.blocks import ActFactory, NormFactory, block


class CNN(nn.Module):
    def __init__(self, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.head(self.features(x))


def build_cnn(
    in_channels: int,
    image_size: int,
    n_classes: int,
    widths: Sequence[int],
    blocks: int,
    act: ActFactory,
    norm: NormFactory | None,
    downsample: Downsample,
    dropout: float = 0.0,
) -> CNN:
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for stage, width in enumerate(widths):
        if stage > 0:
            if size < 2:
                raise UserError(
                    f"model.widths has {len(widths)} stages, but after {stage - 1} downsamplings the "
                    f"{image_size}x{image_size} input is already {size}x{size} and cannot be halved again. "
                    f"Use at most {stage} stages for this image size, or fewer downsamplings."
                )
            layers.append(downsample.make(channels))
            size = downsample.size(size)
        for _ in range(blocks):
            layers.append(block(channels, width, act, norm, spatial=True))
            channels = width
    head = nn.Sequential(OrderedDict(
        pool=nn.AdaptiveAvgPool2d(1),  # (B, C, h, w) -> (B, C, 1, 1)
        flatten=nn.Flatten(),
        dropout=nn.Dropout(dropout),
        fc=nn.Linear(channels, n_classes),
    ))
    return CNN(nn.Sequential(*layers), head)
