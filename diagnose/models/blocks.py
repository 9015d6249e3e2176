"""The building block both models share: weight layer -> norm -> activation."""

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from diagnose.components.layers import width_multiplier

ActFactory = Callable[[], nn.Module]
NormFactory = Callable[[int, bool], nn.Module]  # (channels, spatial) -> module


class Block(nn.Sequential):
    """conv|linear -> [norm] -> act [-> dropout]; children are named so tags read `features.3.act`."""


def block(in_features: int, out_features: int, act: ActFactory, norm: NormFactory | None, spatial: bool,
          dropout: float = 0.0) -> Block:
    activation = act()
    # maxout takes the max over k pieces, so the layer feeding it produces k values per output unit
    width = out_features * width_multiplier(activation)
    normalisation = norm(width, spatial) if norm else None
    bias = normalisation is None  # a norm's own shift makes a bias before it redundant
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    if spatial:
        parts["conv"] = nn.Conv2d(in_features, width, 3, padding=1, bias=bias)
    else:
        parts["linear"] = nn.Linear(in_features, width, bias=bias)
    if normalisation is not None:
        parts["norm"] = normalisation
    parts["act"] = activation
    if dropout > 0:
        parts["dropout"] = nn.Dropout(dropout)
    return Block(parts)
