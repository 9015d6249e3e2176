"""A generated image dataset that needs no files: class prototypes, shifted and noised."""

import torch
import torch.nn.functional as F

from diagnose.data.datasets import RawData

# Tuned so that, on 28x28 with 10 classes, a linear model and a small conv net with a global-average-
# pool head both reach about 0.8 test accuracy in 300 Adam steps, while the best single pixel gives ~0.14.
_SHIFT = 3  # pixels each way: no single pixel is a reliable feature
_GRID = 5  # the blobs' control grid: low frequency, so a shifted blob still resembles itself
_OWN = 0.3  # weight of each class's own blobs against the blobs all classes share
_STRIPES = 1.0  # weight of the class texture against its blobs
_NOISE = 1.0  # per-pixel noise std, relative to the (unit std) blobs and stripes
_SCALE = 36.0  # byte units per unit of pattern around 128: about 5% of pixels clip at 0 or 255


def make_synthetic(channels: int, size: int, classes: int, train_count: int, test_count: int, seed: int) -> RawData:
    """A learnable dataset, the same for the same seed: uint8 images (N, channels, size, size), balanced labels.
    The sizes are checked by the config schema (SyntheticConfig)."""
    gen = torch.Generator().manual_seed(seed)
    # Prototypes are larger than the image so that a shifted crop never shows an edge.
    canvas = size + 2 * _SHIFT
    prototypes = _blobs(classes, channels, canvas, gen) + _STRIPES * _stripes(classes, channels, canvas, gen)
    train_x, train_y = _draw(prototypes, size, train_count, gen)
    test_x, test_y = _draw(prototypes, size, test_count, gen)
    return RawData(train_x, train_y, test_x, test_y, classes, f"synthetic images (generated, data.seed={seed})")


def _blobs(classes: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(classes, channels, size, size) smooth patterns: where things are, which pixel-based models see."""
    shared = torch.randn(1, channels, _GRID, _GRID, generator=gen)
    grid = shared + _OWN * torch.randn(classes, channels, _GRID, _GRID, generator=gen)
    blobs = F.interpolate(grid, size=size, mode="bicubic", align_corners=True)
    return blobs / blobs.std()


def _stripes(classes: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(classes, channels, size, size) gratings of a class's own orientation and wavelength.

    Local texture is what a convolution followed by global average pooling can detect anywhere.
    """
    angle = torch.rand(classes, 1, 1, 1, generator=gen) * torch.pi
    cycles = 1 / (4 + 4 * torch.rand(classes, 1, 1, 1, generator=gen))  # wavelengths of 4 to 8 pixels
    phase = 2 * torch.pi * torch.rand(classes, channels, 1, 1, generator=gen)
    v, u = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    along = u * angle.cos() + v * angle.sin()  # (classes, 1, size, size)
    return (2 * torch.pi * cycles * along + phase).cos() * 2**0.5  # unit std


def _draw(prototypes: torch.Tensor, size: int, count: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(images, labels): shifted crops of the class prototypes, with random contrast, brightness and noise."""
    classes, channels = prototypes.shape[:2]
    # Balanced to within one example, then shuffled.
    labels = torch.arange(count) % classes
    labels = labels[torch.randperm(count, generator=gen)]
    dy = torch.randint(0, 2 * _SHIFT + 1, (count, 1), generator=gen)
    dx = torch.randint(0, 2 * _SHIFT + 1, (count, 1), generator=gen)
    rows = (dy + torch.arange(size)).view(count, 1, size, 1)
    cols = (dx + torch.arange(size)).view(count, 1, 1, size)
    chans = torch.arange(channels).view(1, channels, 1, 1)
    x = prototypes[labels.view(count, 1, 1, 1), chans, rows, cols]  # (count, channels, size, size)
    contrast = 0.7 + 0.6 * torch.rand(count, 1, 1, 1, generator=gen)
    brightness = 0.3 * torch.randn(count, 1, 1, 1, generator=gen)
    x = contrast * x + brightness + _NOISE * torch.randn(x.shape, generator=gen)
    images = (128 + _SCALE * x).round().clamp(0, 255).to(torch.uint8)
    return images, labels
