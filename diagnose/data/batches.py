"""Cut, normalise and augment batches on the device, by indexing: no per-sample Python, no DataLoader."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

_PAD = 4  # the usual CIFAR crop: pad 4 pixels, crop back to the original size


def shuffled_batches(
    n: int, batch: int, generator: torch.Generator, device: torch.device | str
) -> Iterator[torch.Tensor]:
    """Index tensors (batch,) covering one shuffled epoch of n examples.

    The last incomplete batch is dropped: a leftover of 1 example would break BatchNorm, and a
    small one would make its statistics noisier than the batch size under study.
    """
    order = torch.randperm(n, generator=generator, device=device)
    for start in range(0, n - batch + 1, batch):
        yield order[start : start + batch]


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, center: bool) -> torch.Tensor:
    """float32 (B, C, H, W), a new tensor: uint8 images as x/255 (raw [0, 1]), float inputs as they are; then
    per-channel (x - mean) / std when centring."""
    # the float case copies too: centring works in place, and x may be a view of the resident dataset
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
    if center:
        x.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
    return x


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after 4-pixel zero padding, and random horizontal flip, for a whole batch at once (uint8 or
    float, as stored)."""
    b, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD))  # (B, C, H+8, W+8)
    dy = torch.randint(0, 2 * _PAD + 1, (b, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * _PAD + 1, (b, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (b, 1), generator=generator, device=device).bool()
    rows = dy + torch.arange(h, device=device)  # (B, H)
    cols = dx + torch.arange(w, device=device)  # (B, W)
    cols = torch.where(flip, cols.flip(1), cols)  # reading columns backwards is the flip
    batch_i = torch.arange(b, device=device).view(b, 1, 1, 1)
    chan_i = torch.arange(c, device=device).view(1, c, 1, 1)
    return padded[batch_i, chan_i, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
