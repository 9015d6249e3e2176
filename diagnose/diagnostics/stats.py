"""Statistics of one tensor, computed where it lives. On a GPU nothing here reads a value back to the host; on the
CPU a value is read only where there is no device to wait for (`mean_std`)."""

import torch

HIST_BINS = 64


HIST_SAMPLE = 1 << 14

# the shortcut var = E[x²] - E[x]² is trusted while var >= this * E[x²] (|mean| < ~10 std): its float32 row sums,
# added in float64, are good to ~1e-7 of E[x²] (~1e-6 for a row of millions), so the std keeps ~4 digits; beyond
# it, the centred second pass
CANCELLATION = 1e-2

ZERO_BLOCK = 1 << 18  # entries (1 MiB of float32) that `zero_fraction` counts at a time, in the core's cache


def in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """x's dimensions permuted outermost-first as it lies in memory: a channels-last map (B, C, H, W) becomes a
    (B, H, W, C) view, so flattening it costs no copy (flatten() of the map itself copies all of it)."""
    order = sorted(range(x.dim()), key=lambda dim: -x.stride(dim))
    return x.permute(order)


def memory_rows(x: torch.Tensor) -> torch.Tensor:
    """(outer, rest): x's entries as rows along its outermost dimension in memory (one row for a vector), a view
    wherever x is dense."""
    x = in_memory_order(x)
    return x.reshape(x.shape[0] if x.dim() > 1 else 1, -1)


def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of a tensor as 0-d float32 tensors. A NaN/Inf entry makes the mean NaN/Inf: it doubles as the
    tensor's finiteness check.

    On the CPU: the sums of x and x² in one read each, by rows in float32 and across rows in float64, and no copy of
    x (a centred copy `x - mean` cost as much again). Where the mean dwarfs the spread (a saturated sigmoid's outputs
    near 0.5 with a spread of 1e-4) the shortcut would lose the std to cancellation; there, on other devices
    (where checking would make the host wait) and for an empty tensor, the std comes from a second, centred pass,
    which stays exact.
    """
    x = x.detach()
    n = x.numel()
    if x.device.type == "cpu" and n:
        rows = memory_rows(x)
        mean = rows.sum(dim=1, dtype=torch.float32).double().sum() / n
        mean_square = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32).double().square().sum() / n
        var = mean_square - mean * mean
        # a CPU tensor's value: nothing to wait for. Inf: x² overflowed float32 (|x| > 1.8e19) where x did not
        if var >= CANCELLATION * mean_square and torch.isfinite(mean_square):
            return mean.float(), var.sqrt().float()
        mean = mean.float()
    else:
        mean = x.mean(dtype=torch.float32)
    return mean, torch.linalg.vector_norm(x - mean, dtype=torch.float32) / n**0.5


def norm_from(mean: torch.Tensor, std: torch.Tensor, numel: int) -> torch.Tensor:
    """The L2 norm of a tensor from its mean and std, ||x||^2 = N (std^2 + mean^2), without a third pass."""
    return torch.hypot(mean, std) * numel**0.5


def zero_fraction(x: torch.Tensor) -> torch.Tensor:
    # |sign| summed counts the non-zeros; on the CPU it is several times faster than count_nonzero
    x = x.detach()
    if x.device.type != "cpu" or x.numel() <= ZERO_BLOCK:
        return 1 - x.sign().abs_().sum(dtype=torch.float32) / x.numel()
    # block by block through one buffer the size of a block: a temporary as large as x (a conv map's 13 MB) is a fresh
    # allocation whose pages the kernel faults in and zeroes, and in a training step that cost more than the count
    flat, buffer = memory_rows(x).reshape(-1), x.new_empty(ZERO_BLOCK)
    counts = [_nonzeros(block, buffer) for block in flat.split(ZERO_BLOCK)]
    # each block's count is exact in float32 (< 2**24) and so is their sum in float64: the one-shot float32 sum's count
    # wherever that is exact (up to 2**24 entries)
    return 1 - torch.stack(counts).double().sum().float() / x.numel()


def _nonzeros(block: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """The number of non-zero entries of a flat block, as a float32: the signs' dot product with themselves, which is
    |sign| summed, in two passes over the block where abs and sum took three (a statistics step of the default CNN
    ~2 ms faster, of ~23); exact, since every term is 0 or 1 and every partial sum an integer below 2**24."""
    signs = torch.sign(block, out=buffer[:len(block)])
    return torch.dot(signs, signs) if signs.dtype == torch.float32 else signs.abs_().sum(dtype=torch.float32)


def dead_units(x: torch.Tensor) -> torch.Tensor:
    """(units,) bool: units whose output is <= 0 for every example and position (zero for a ReLU).

    A unit is a channel of a conv map (B, C, H, W) or a neuron of a vector (B, C)."""
    every_but_units = [0, *range(2, x.dim())]
    return x.detach().amax(dim=every_but_units) <= 0


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


def histogram_sample(x: torch.Tensor) -> torch.Tensor:
    """An evenly strided copy of at most HIST_SAMPLE entries: a histogram is for the eye, and binning a
    sample keeps it cheap enough to draw every step (and small enough to keep until the step ends)."""
    x = in_memory_order(x.detach()).flatten()
    return x[:: -(-x.numel() // HIST_SAMPLE)].float().clone()  # stride ceil(n / HIST_SAMPLE)


def histograms(samples: list[torch.Tensor], bins: int = HIST_BINS) -> torch.Tensor:
    """(k, 5 + bins): per sample [min, max, count, sum, sum of squares, *bin counts] of its finite entries.

    The samples are binned together as the rows of one NaN-padded matrix, a fixed number of kernels however
    many layers there are, and the range stays on the device (torch.histc would want it as host numbers:
    one sync per histogram). Non-finite entries are left out here and reported by `mean_std`.
    """
    x = torch.nn.utils.rnn.pad_sequence(samples, batch_first=True, padding_value=torch.nan)  # (k, L)
    k = len(samples)
    finite = torch.isfinite(x)
    ones = finite.float()
    low = torch.where(finite, x, torch.inf).amin(dim=1, keepdim=True)  # (k, 1)
    high = torch.where(finite, x, -torch.inf).amax(dim=1, keepdim=True)
    width = (high - low).clamp(min=1e-12)
    index = ((x - low) / width * bins).nan_to_num(0).long().clamp(0, bins - 1)
    rows = torch.arange(k, device=x.device)[:, None] * bins
    counts = torch.zeros(k * bins, device=x.device).scatter_add_(0, (rows + index).flatten(), ones.flatten())
    x = torch.where(finite, x, 0.0)
    summary = [low[:, 0], high[:, 0], ones.sum(dim=1), x.sum(dim=1), (x * x).sum(dim=1)]
    return torch.cat([torch.stack(summary, dim=1), counts.view(k, bins)], dim=1)


def batch_vs_running(batch_mean: torch.Tensor, batch_var: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, eps: float) -> list[torch.Tensor]:
    """How far a batch's statistics are from a BN layer's running ones, averaged over channels:
    [|mu_B - mu_run| / sigma_run, var_B / var_run]. Large values: eval mode will see other inputs."""
    shift = ((batch_mean - running_mean).abs() / (running_var + eps).sqrt()).mean()
    ratio = ((batch_var + eps) / (running_var + eps)).mean()
    return [shift, ratio]


def units_identical(weight: torch.Tensor) -> bool:
    """True when every output unit of a layer has the same incoming weights (a symmetry no gradient breaks)."""
    w = weight.detach().flatten(1)
    return len(w) > 1 and bool((w - w[:1]).abs().max() == 0)
