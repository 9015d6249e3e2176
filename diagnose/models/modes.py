"""Running a model with its BatchNorm layers in another mode than the rest, leaving no trace behind."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
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


def untouched_random_state(device: torch.device) -> Any:
    """A block whose random draws (dropout in an extra pass) leave training's streams as they were: the CPU
    generator's and that of an accelerator `device` (CUDA, MPS)."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


@contextmanager
def leaves_no_trace(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Extra forward/backward passes that training never sees: BN's running statistics are put back afterwards
    and the random streams (dropout) forked."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with untouched_random_state(device):
            yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
