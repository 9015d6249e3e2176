"""Measurements on held-out data: dead units on a fixed probe batch, BN in train vs eval mode."""

from functools import partial

import torch
from torch import nn

from diagnose.components.activations import RELU_LIKE
from diagnose.diagnostics import stats
from diagnose.diagnostics.layers import Layer
from diagnose.models.modes import batch_statistics


class DeadUnitProbe:
    """Dead units of every ReLU-like layer on a fixed batch held out from training.

    A unit (a channel of a conv map, a neuron of an MLP) is dead when its output is <= 0 (zero for a ReLU)
    for every probe example and position. Besides the share dead now, it tracks the share dead at every
    probe since `since`: permanently dead units, as opposed to ones that flicker back to life.
    """

    def __init__(self, model: nn.Module, layers: list[Layer], probe_x: torch.Tensor, since: int = 0, chunk: int = 128):
        self.model, self.probe_x, self.since, self.chunk = model, probe_x, since, chunk
        self.layers = [layer for layer in layers if layer.kind == RELU_LIKE]
        self.always_dead: dict[str, torch.Tensor] = {}  # (units,) bool per layer, on the device

    @torch.no_grad()
    def measure(self, step: int) -> dict[str, torch.Tensor]:
        """{tag: 0-d tensor} for dead/<layer> and, from step `since` on, dead_permanent/<layer>."""
        outputs: dict[str, torch.Tensor] = {}  # per layer: dead in every chunk so far

        def hook(module: nn.Module, inputs: tuple, out: torch.Tensor, name: str) -> None:
            dead = stats.dead_units(out)
            outputs[name] = outputs[name] & dead if name in outputs else dead

        handles = [layer.module.register_forward_hook(partial(hook, name=layer.name)) for layer in self.layers]
        try:
            # BN takes each chunk's statistics, as in training; a chunk without gradients costs less memory
            # than a training step of the same size
            with batch_statistics(self.model):
                for start in range(0, len(self.probe_x), self.chunk):
                    self.model(self.probe_x[start:start + self.chunk])
        finally:
            for handle in handles:
                handle.remove()
        result = {}
        for name, dead in outputs.items():
            result[f"dead/{name}"] = dead.float().mean()
            if step >= self.since:
                self.always_dead[name] = self.always_dead.get(name, dead) & dead
                result[f"dead_permanent/{name}"] = self.always_dead[name].float().mean()
        return result
