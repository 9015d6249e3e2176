"""Running a model with its BatchNorm layers in another mode than the rest, leaving no trace behind."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Run with every BatchNorm normalising by the batch's own statistics (as in training), the rest of the
    model (dropout) in eval mode, and the running statistics left exactly as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers()} for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    try:
        yield
    finally:
        for m, buffers in zip(norms, saved, strict=True):
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
        model.train(was_training)
