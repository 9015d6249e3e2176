"""Apply a weight-init scheme to a built model."""

from collections.abc import Callable

import torch
from torch import nn

from diagnose.models.blocks import Block


def init_weights(model: nn.Module, scheme: Callable[[torch.Tensor, float], None], act_gain: float) -> None:
    """Initialise every conv/linear weight and zero its bias.

    A layer that feeds an activation gets that activation's gain; the others (the head, a strided
    downsampling conv) feed a linear path and get gain 1.
    """
    feeds_act = {id(module[0]) for module in model.modules() if isinstance(module, Block)}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            scheme(module.weight, act_gain if id(module) in feeds_act else 1.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
