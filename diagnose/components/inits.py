"""Weight initialisation schemes by short name: each takes (weight, gain, **options) and fills it in place."""

import math
from collections.abc import Callable

import torch
from torch import nn


def _fan_in(weight: torch.Tensor) -> int:
    return weight[0].numel()  # (out, in) or (out, in, kh, kw): everything feeding one output unit


def normal(weight: torch.Tensor, gain: float, std: float = 0.01) -> None:
    """N(0, std^2) whatever the layer size: the lecture's "small random numbers" (and, with std=1, explosion)."""
    nn.init.normal_(weight, 0.0, std)


def uniform(weight: torch.Tensor, gain: float, a: float = 0.05) -> None:
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


INITS: dict[str, Callable[..., None] | None] = {
    "default": None,  # keep PyTorch's own initialisation (kaiming_uniform with a=sqrt(5), uniform bias)
    "zeros": zeros,
    "normal": normal,
    "uniform": uniform,
    "xavier_uniform": lambda weight, gain: nn.init.xavier_uniform_(weight, gain),
    "xavier_normal": lambda weight, gain: nn.init.xavier_normal_(weight, gain),
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": lambda weight, gain: nn.init.orthogonal_(weight, gain),
}
