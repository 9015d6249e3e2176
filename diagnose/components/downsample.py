"""Ways to halve a feature map between CNN stages: pooling or a learned stride-2 convolution."""

import math
from collections.abc import Callable

from torch import nn

DOWNSAMPLES: dict[str, Callable[[int], nn.Module]] = {
    "maxpool": lambda channels: nn.MaxPool2d(2),
    "avgpool": lambda channels: nn.AvgPool2d(2),
    "strided": lambda channels: nn.Conv2d(channels, channels, 3, stride=2, padding=1),
}


def downsampled_size(size: int, module: nn.Module) -> int:
    """Spatial size after one downsampling: pooling floors, a padded stride-2 conv rounds up."""
    return math.ceil(size / 2) if isinstance(module, nn.Conv2d) else size // 2
