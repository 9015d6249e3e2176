"""Ways to halve a feature map between CNN stages: pooling or a learned stride-2 convolution."""

import math
from collections.abc import Callable
from dataclasses import dataclass

from diagnose.lazy import later
from diagnose.registry import Component

nn = later("torch.nn")  # imported when a layer is built


@dataclass(frozen=True, kw_only=True)
class Downsample(Component):
    """`make(channels)` builds the layer; `size(n)` is the side of an n x n map after it."""

    size: Callable[[int], int]


DOWNSAMPLES: dict[str, Downsample] = {
    "maxpool": Downsample(make=lambda channels: nn.MaxPool2d(2), size=lambda n: n // 2),
    "avgpool": Downsample(make=lambda channels: nn.AvgPool2d(2), size=lambda n: n // 2),
    # padded, so it rounds up where pooling floors
    "strided": Downsample(make=lambda channels: nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                          size=lambda n: math.ceil(n / 2)),
}
