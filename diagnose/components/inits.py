"""Weight initialisation schemes by short name: each fills a weight in place, given the gain of the activation
the layer feeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from diagnose import checks
from diagnose.lazy import later
from diagnose.registry import Component, Options

torch, nn = later("torch"), later("torch.nn")  # imported when a weight is filled


def _fan_in(weight: torch.Tensor) -> int:
    return weight[0].numel()  # (out, in) or (out, in, kh, kw): everything feeding one output unit


@dataclass
class NormalOptions(Options):
    std: float = 0.01  # N(0, std^2) for every layer, whatever its fan-in

    def __post_init__(self) -> None:
        checks.at_least("init.std", self.std, 0)


@dataclass
class UniformOptions(Options):
    a: float = 0.05  # U(-a, a) for every layer, whatever its fan-in

    def __post_init__(self) -> None:
        checks.at_least("init.a", self.a, 0)


def normal(weight: torch.Tensor, gain: float, std: float) -> None:
    """N(0, std^2) whatever the layer size: the lecture's "small random numbers" (and, with std=1, explosion)."""
    nn.init.normal_(weight, 0.0, std)


def uniform(weight: torch.Tensor, gain: float, a: float) -> None:
    nn.init.uniform_(weight, -a, a)


def zeros(weight: torch.Tensor, gain: float) -> None:
    nn.init.zeros_(weight)


def kaiming_normal(weight: torch.Tensor, gain: float) -> None:
    """std = gain / sqrt(fan_in): sqrt(2 / fan_in) for ReLU (He et al. 2015)."""
    nn.init.normal_(weight, 0.0, gain / math.sqrt(_fan_in(weight)))


def kaiming_uniform(weight: torch.Tensor, gain: float) -> None:
    bound = gain * math.sqrt(3 / _fan_in(weight))  # U(-b, b) has std b / sqrt(3)
    nn.init.uniform_(weight, -bound, bound)


def lecun_normal(weight: torch.Tensor, gain: float) -> None:
    """Var(w) = 1 / fan_in, no gain: right for linear/tanh-like units, halves ReLU signal variance per layer."""
    nn.init.normal_(weight, 0.0, 1 / math.sqrt(_fan_in(weight)))


# Each `make(weight, gain, **settings)` fills a conv/linear weight in place.
INITS: dict[str, Component] = {
    "default": Component(make=None),  # keep PyTorch's own initialisation (kaiming_uniform with a=sqrt(5), uniform bias)
    "zeros": Component(make=zeros),
    "normal": Component(make=normal, options=NormalOptions),
    "uniform": Component(make=uniform, options=UniformOptions),
    "xavier_uniform": Component(make=lambda weight, gain: nn.init.xavier_uniform_(weight, gain)),
    "xavier_normal": Component(make=lambda weight, gain: nn.init.xavier_normal_(weight, gain)),
    "kaiming_normal": Component(make=kaiming_normal),
    "kaiming_uniform": Component(make=kaiming_uniform),
    "lecun_normal": Component(make=lecun_normal),
    "orthogonal": Component(make=lambda weight, gain: nn.init.orthogonal_(weight, gain)),
}
