"""The layers torch lacks, which the activation and norm registries build: Maxout and Batch-Instance Norm."""

import torch
import torch.nn.functional as F
from torch import nn


class Maxout(nn.Module):
    """Max over `pieces` consecutive channels: the layer before it must produce pieces x channels."""

    def __init__(self, pieces: int = 2):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C*k, ...) -> (B, C, k, ...) -> max over k; works for conv maps and MLP vectors alike
        return x.unflatten(1, (-1, self.pieces)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def width_multiplier(act: nn.Module) -> int:
    """How many inputs the activation consumes per output unit (maxout: its pieces; others: 1)."""
    return act.pieces if isinstance(act, Maxout) else 1


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


def gates(model: nn.Module) -> list[nn.Parameter]:
    """The rho of every Batch-Instance Norm layer in `model`."""
    return [m.rho for m in model.modules() if isinstance(m, BatchInstanceNorm)]


@torch.no_grad()
def clamp_gates_(rhos: list[nn.Parameter]) -> None:
    """Keep Batch-Instance Norm gates in [0, 1]: called after every optimizer step."""
    for rho in rhos:
        rho.clamp_(0.0, 1.0)
