"""Loss and accuracy of a model over a whole split, in large batches, with one host sync at the end."""

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch: int = 1024,
) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in eval mode on uint8 inputs `x`; the mode is restored after."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(y), batch):
        xb, yb = prepare(x[start:start + batch]), y[start:start + batch]
        logits = model(xb).float()
        total_loss += loss_fn(logits, yb) * len(yb)  # losses are batch means
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(len(y), 1)
    return total_loss.item() / n, correct.item() / n
