"""Normalisation layers by short name; each entry builds its layer from (channels, spatial) and says what
statistics it normalises by."""

from __future__ import annotations

from dataclasses import dataclass

from diagnose import checks
from diagnose.errors import UserError
from diagnose.kinds import BATCH, EXAMPLE, NONE  # noqa: F401 - the kinds, also from here
from diagnose.lazy import later
from diagnose.registry import Component, Options

nn, layers = later("torch.nn"), later("diagnose.components.layers")  # imported when a layer is built


@dataclass(frozen=True, kw_only=True)
class Norm(Component):
    """`make(channels, spatial, **settings)` builds the layer for a (B, C, H, W) map or a (B, C) vector."""

    kind: str  # BATCH, EXAMPLE or NONE
    channels_last: bool = True  # False: a CNN with it runs slower in channels_last (measured, models/layout.py)


@dataclass
class GroupNormOptions(Options):
    groups: int = 8  # must divide every normalised layer's channel count

    def __post_init__(self) -> None:
        checks.whole("norm.groups", self.groups)


def _group_norm(channels: int, spatial: bool, groups: int) -> nn.Module:
    if channels % groups:
        raise UserError(
            f"norm=gn with norm.groups={groups} needs every normalised layer's channel count to be "
            f"divisible by {groups}, but a layer has {channels} channels. Pick norm.groups from the "
            f"divisors of the layer widths (e.g. norm.groups=1 is LayerNorm-like, groups=channels is "
            f"InstanceNorm-like) or change the widths."
        )
    return nn.GroupNorm(groups, channels)


# channels_last, training steps/s against NCHW for the default CNN on a 2-core CPU at batch 8 and 128: instance
# norm reshapes each map to (1, B*C, H, W), a copy out of NHWC (0.91x, 0.74x); BIN contains it (0.98-1.02x, 0.89x).
NORMS: dict[str, Norm] = {
    "none": Norm(make=None, kind=NONE),
    "bn": Norm(make=lambda channels, spatial: nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels),
               kind=BATCH),
    "gn": Norm(make=_group_norm, options=GroupNormOptions, kind=EXAMPLE),
    # LN for conv maps normalises each example over (C, H, W): GroupNorm with one group does exactly that
    # without having to know H and W when the model is built.
    "ln": Norm(make=lambda channels, spatial: nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels),
               kind=EXAMPLE),
    # IN for MLP blocks: see _instance_normalise (per example over the features, as LN does).
    "in": Norm(make=lambda channels, spatial: nn.InstanceNorm2d(channels, affine=True) if spatial
               else nn.LayerNorm(channels), kind=EXAMPLE, channels_last=False),
    "bin": Norm(make=lambda channels, spatial: layers.BatchInstanceNorm(channels), kind=BATCH, channels_last=False),
}
