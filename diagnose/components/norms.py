"""Normalisation layers by short name; each entry builds its layer from (channels, spatial) and says what
statistics it normalises by."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diagnose import checks
from diagnose.errors import UserError
from diagnose.kinds import BATCH, EXAMPLE, NONE  # noqa: F401 - the kinds, also from here
from diagnose.registry import Component, Options


@dataclass(frozen=True, kw_only=True)
class Norm(Component):
    """`make(channels, spatial, **settings)` builds the layer for a (B, C, H, W) map or a (B, C) vector."""

    kind: str  # BATCH, EXAMPLE or NONE
    channels_last: bool = True  # False: a CNN with it runs slower in channels_last (measured, models/layout.py)


class BatchInstanceNorm(nn.modules.batchnorm._BatchNorm):
    """Batch-Instance Norm (Nam & Kim 2018): y = (rho * x_BN + (1 - rho) * x_IN) * gamma + beta.

    One learnable rho per channel, starting at 1 (pure BN); the trainer clamps it to [0, 1] after every
    optimizer step and trains it with 10x lr and no weight decay, as the paper's code does. Subclassing
    _BatchNorm keeps running stats, state_dict keys and isinstance checks identical to BatchNorm.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(channels, eps, momentum, affine=True, track_running_stats=True)
        self.rho = nn.Parameter(torch.ones(channels))

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"BatchInstanceNorm expects (B, C) or (B, C, H, W) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch_stats = self.training or self.running_mean is None
        x_bn = F.batch_norm(
            x, self.running_mean, self.running_var, None, None, use_batch_stats, self.momentum, self.eps
        )
        x_in = _instance_normalise(x, self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast per channel
        rho = self.rho.view(shape)
        return (rho * x_bn + (1 - rho) * x_in) * self.weight.view(shape) + self.bias.view(shape)


def _instance_normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Each example and channel over its positions; an MLP unit has one position, so there each
    example is normalised over its features instead (normalising one number would zero it)."""
    if x.dim() == 4:
        return F.instance_norm(x, eps=eps)
    return F.layer_norm(x, x.shape[1:], eps=eps)


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
    "bin": Norm(make=lambda channels, spatial: BatchInstanceNorm(channels), kind=BATCH, channels_last=False),
}


def gates(model: nn.Module) -> list[nn.Parameter]:
    """The rho of every Batch-Instance Norm layer in `model`."""
    return [m.rho for m in model.modules() if isinstance(m, BatchInstanceNorm)]


@torch.no_grad()
def clamp_gates_(rhos: list[nn.Parameter]) -> None:
    """Keep Batch-Instance Norm gates in [0, 1]: called after every optimizer step."""
    for rho in rhos:
        rho.clamp_(0.0, 1.0)
