"""Activation functions by short name: each entry says how to build it, its init gain, and what can go wrong
with it (the diagnostics measure dead units, saturation or neither from that)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnose import checks
from diagnose.kinds import IDENTITY, RELU_LIKE, SATURATING, SMOOTH  # noqa: F401 - the kinds, also from here
from diagnose.lazy import later
from diagnose.registry import Component, Options

torch, nn, F = later("torch"), later("torch.nn"), later("torch.nn.functional")  # imported when a layer is built
layers = later("diagnose.components.layers")


@dataclass(frozen=True, kw_only=True)
class Activation(Component):
    """`make(**settings)` builds the layer; `gain(**settings)` is the init gain that keeps the signal's second
    moment from layer to layer."""

    gain: Callable[..., float]
    kind: str  # RELU_LIKE, SATURATING, SMOOTH or IDENTITY
    # (outputs, diag settings) -> bool mask of the outputs in the flat tails; saturating activations only
    saturated: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    init: str = "kaiming_normal"  # the init scheme that keeps its signal's scale over depth (with its gain)
    instead: str = "leaky_relu"  # what to try instead when its failure (dead units, saturation) shows
    channels_last: bool = True  # False: a CNN with it runs slower in channels_last (measured, models/layout.py)


@dataclass
class LeakyReLUOptions(Options):
    slope: float = 0.01  # output for negative inputs is slope * x


@dataclass
class ELUOptions(Options):
    alpha: float = 1.0  # negative inputs saturate at -alpha


@dataclass
class MaxoutOptions(Options):
    pieces: int = 2  # max over this many linear/conv pieces; the layer before produces pieces x width outputs

    def __post_init__(self) -> None:
        checks.whole("act.pieces", self.pieces, minimum=2)  # a max over one piece is the identity


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


# torch.nn.init.calculate_gain covers relu, leaky_relu, sigmoid, tanh and linear. For the others the gain
# follows the principle Kaiming used for ReLU: gain = 1 / sqrt(E[f(z)^2]), which keeps the second moment of
# the signal constant from layer to layer (relu gives sqrt(2), as calculate_gain does).
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(make=lambda: nn.ReLU(), gain=lambda: nn.init.calculate_gain("relu"), kind=RELU_LIKE),
    "leaky_relu": Activation(make=lambda slope: nn.LeakyReLU(slope), options=LeakyReLUOptions, kind=SMOOTH,
                             gain=lambda slope: nn.init.calculate_gain("leaky_relu", slope)),
    "elu": Activation(make=lambda alpha: nn.ELU(alpha), options=ELUOptions, kind=SMOOTH,
                      gain=lambda alpha: 1 / math.sqrt(_gaussian_second_moment(lambda z: F.elu(z, alpha)))),
    "sigmoid": Activation(make=lambda: nn.Sigmoid(), gain=lambda: nn.init.calculate_gain("sigmoid"), kind=SATURATING,
                          init="xavier_normal", instead="relu",
                          saturated=lambda y, diag: (y < diag.sigmoid_flat) | (y > 1 - diag.sigmoid_flat)),
    "tanh": Activation(make=lambda: nn.Tanh(), gain=lambda: nn.init.calculate_gain("tanh"), kind=SATURATING,
                       init="xavier_normal", instead="relu", saturated=lambda y, diag: y.abs() > diag.tanh_flat),
    "gelu": Activation(make=lambda: nn.GELU(), kind=SMOOTH,
                       gain=lambda: 1 / math.sqrt(_gaussian_second_moment(F.gelu))),
    # channels_last makes a CNN with maxout's max over channel pieces slower: 0.8x at batch 8, 0.54x at 128
    "maxout": Activation(make=lambda pieces: layers.Maxout(pieces), options=MaxoutOptions, kind=SMOOTH,
                         channels_last=False, gain=lambda pieces: 1 / math.sqrt(_maxout_second_moment(pieces))),
    "identity": Activation(make=lambda: nn.Identity(), gain=lambda: 1.0, kind=IDENTITY),
}
