"""Activation functions by short name, and the init gain each one wants."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diagnose.errors import UserError


class Maxout(nn.Module):
    """Max over `pieces` consecutive channels: the layer before it must produce pieces x channels."""

    def __init__(self, pieces: int = 2):
        super().__init__()
        if pieces < 2:
            raise UserError(f"act=maxout needs act.pieces >= 2 (the max is taken over that many pieces), got {pieces}.")
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C*k, ...) -> (B, C, k, ...) -> max over k; works for conv maps and MLP vectors alike
        return x.unflatten(1, (-1, self.pieces)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda slope=0.01: nn.LeakyReLU(slope),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "maxout": Maxout,
    "identity": nn.Identity,
}


def width_multiplier(act: nn.Module) -> int:
    """How many inputs the activation consumes per output unit (maxout: its pieces; others: 1)."""
    return act.pieces if isinstance(act, Maxout) else 1


def _gaussian_second_moment(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """E[f(z)^2] for z ~ N(0, 1), by quadrature on a fine grid (exact enough, deterministic)."""
    z = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    density = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(f(z) ** 2 * density, z))


def _maxout_second_moment(pieces: int) -> float:
    """E[max(z_1..z_k)^2] for iid standard normals; the max has density k * phi * Phi^(k-1)."""
    z = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    phi = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return float(torch.trapezoid(z**2 * pieces * phi * cdf ** (pieces - 1), z))


# torch.nn.init.calculate_gain covers relu, leaky_relu, sigmoid, tanh and linear. For the others we use
# the same principle Kaiming used for ReLU: gain = 1 / sqrt(E[f(z)^2]), which keeps the second moment of
# the signal constant from layer to layer (relu gives sqrt(2), as calculate_gain does).
GAINS: dict[str, Callable[..., float]] = {
    "relu": lambda: nn.init.calculate_gain("relu"),
    "leaky_relu": lambda slope=0.01: nn.init.calculate_gain("leaky_relu", slope),
    "sigmoid": lambda: nn.init.calculate_gain("sigmoid"),
    "tanh": lambda: nn.init.calculate_gain("tanh"),
    "identity": lambda: 1.0,
    "elu": lambda alpha=1.0: 1 / math.sqrt(_gaussian_second_moment(lambda z: F.elu(z, alpha))),
    "gelu": lambda: 1 / math.sqrt(_gaussian_second_moment(F.gelu)),
    "maxout": lambda pieces=2: 1 / math.sqrt(_maxout_second_moment(pieces)),
}
