"""Statistics of one tensor, computed on its device; nothing here reads a value back to the host."""

import torch

HIST_BINS = 64


def moments(x: torch.Tensor) -> list[torch.Tensor]:
    """[mean, std, fraction of exact zeros, all finite (1/0)] of a tensor, as 0-d float tensors."""
    x = x.detach().float()
    return [x.mean(), x.std(correction=0), (x == 0).float().mean(), torch.isfinite(x).all().float()]


def saturated_fraction(x: torch.Tensor, kind: str, sigmoid_flat: float, tanh_flat: float) -> torch.Tensor:
    """Share of outputs in the flat tails, where the local gradient is nearly zero."""
    x = x.detach().float()
    if kind == "sigmoid":
        return ((x < sigmoid_flat) | (x > 1 - sigmoid_flat)).float().mean()
    return (x.abs() > tanh_flat).float().mean()


def unit_view(x: torch.Tensor) -> torch.Tensor:
    """(units, values): a unit is a channel of a conv map (B, C, H, W) or a neuron of a vector (B, C)."""
    return x.detach().transpose(0, 1).flatten(1)


def dead_units(x: torch.Tensor) -> torch.Tensor:
    """(units,) bool: units whose output is <= 0 for every example and position (zero for a ReLU)."""
    return (unit_view(x) <= 0).all(dim=1)


def sign_agreement(grad: torch.Tensor) -> torch.Tensor:
    """Mean over output units of |sum of signs| / (number of non-zero entries) of the unit's incoming
    weight gradient: 1 when every weight of a unit is pushed the same way (all-positive inputs: the
    zig-zag), near 0 when the signs are balanced. Units with an all-zero gradient are left out; averaging
    over the whole tensor instead would let units of opposite sign cancel."""
    g = grad.detach().flatten(1)  # (out, fan_in)
    nonzero = (g != 0).sum(dim=1)
    agreement = g.sign().sum(dim=1).abs() / nonzero.clamp(min=1)
    live = nonzero > 0
    return (agreement * live).sum() / live.sum().clamp(min=1)


def histogram(x: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """[min, max, count, sum, sum of squares, *bin counts] of the finite entries, for add_histogram_raw.

    torch.histc wants its range as host numbers (one sync per histogram, or an internal .item()); binning
    with scatter_add keeps the range on the device, so every histogram of a step comes back in one transfer.
    Non-finite entries are left out here and reported by `moments`.
    """
    x = x.detach().float().flatten()
    finite = torch.isfinite(x)
    low = torch.where(finite, x, torch.inf).min()
    high = torch.where(finite, x, -torch.inf).max()
    width = (high - low).clamp(min=1e-12)
    index = ((x - low) / width * bins).nan_to_num(0).long().clamp(0, bins - 1)
    counts = torch.zeros(bins, device=x.device).scatter_add_(0, index, finite.float())
    x = torch.where(finite, x, 0.0)
    summary = torch.stack([low, high, finite.sum().float(), x.sum(), (x * x).sum()])
    return torch.cat([summary, counts])


def batch_vs_running(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                     eps: float) -> list[torch.Tensor]:
    """How far this batch's statistics are from a BN layer's running ones, averaged over channels:
    [|mu_B - mu_run| / sigma_run, var_B / var_run]. Large values: eval mode will see other inputs."""
    units = unit_view(x).float()
    mean, var = units.mean(dim=1), units.var(dim=1, correction=0)
    shift = ((mean - running_mean).abs() / (running_var + eps).sqrt()).mean()
    ratio = ((var + eps) / (running_var + eps)).mean()
    return [shift, ratio]
