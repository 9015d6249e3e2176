"""Loss and accuracy of a model over a whole split, in large batches, with one host sync at the end."""

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from diagnose.models.modes import batch_statistics


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch: int = 1024,
    batch_stats: bool = False,
) -> tuple[float, float]:
    """(mean loss, accuracy) on uint8 inputs `x`, in eval mode; the model's mode is restored after.

    batch_stats: let BatchNorm normalise each batch by its own statistics, as in training (the running
    statistics stay untouched), to measure the train/eval shift of BN.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    seen = 0
    with batch_statistics(model) if batch_stats else nullcontext():
        for start in range(0, len(y), batch):
            xb, yb = prepare(x[start:start + batch]), y[start:start + batch]
            if batch_stats and len(yb) < 2:
                break  # BN cannot take batch statistics over one example
            logits = model(xb).float()
            total_loss += loss_fn(logits, yb) * len(yb)  # losses are batch means
            correct += (logits.argmax(dim=1) == yb).sum()
            seen += len(yb)
    model.train(was_training)
    loss, right = torch.stack([total_loss, correct.float()]).tolist()  # the one host sync
    return loss / max(seen, 1), right / max(seen, 1)
