"""The batches of a training run: which examples each step takes, and the step's input tensors."""

import itertools
from collections.abc import Iterator

import torch

from diagnose.build import Run
from diagnose.data.batches import augment, shuffled_batches
from diagnose.training.state import epoch_generator


def epoch_batches(run: Run, epoch: int) -> Iterator[torch.Tensor]:
    """The index tensors of one epoch's batches, in an order fixed by (seed, epoch)."""
    generator = epoch_generator(run.seed, epoch, run.device)
    return shuffled_batches(len(run.data.train_y), run.batch, generator, run.device)


def batch_indices(run: Run, done: int) -> Iterator[torch.Tensor]:
    """The index tensors of the batches after `done` steps, epoch after epoch: replaying or resuming from any
    step sees the very same batches."""
    epoch, position = divmod(done, run.steps_per_epoch)
    while True:
        yield from itertools.islice(epoch_batches(run, epoch), position, None)
        epoch, position = epoch + 1, 0


def training_batch(run: Run, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs (B, C, H, W) float, normalised and augmented as configured, and the labels (B,) of `idx`."""
    x = run.data.train_x[idx]  # uint8
    if run.augment:
        x = augment(x, generator)
    return run.prepare(x), run.data.train_y[idx]


def noise_batches(run: Run, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of diag.noise_batch training examples drawn at random, prepared as training's are, from a stream of
    their own fixed by (seed, step): training's batches are untouched and a resumed run draws the same ones."""
    generator = torch.Generator(device=run.device).manual_seed(run.seed * 1_000_003 + step)
    while True:
        idx = torch.randint(len(run.data.train_y), (run.diag.noise_batch,), device=run.device, generator=generator)
        yield training_batch(run, idx, generator)
