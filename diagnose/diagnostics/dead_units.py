"""Dead units on a fixed batch held out from training."""

from functools import partial
from typing import Any

import torch
from torch import nn

from diagnose.components.activations import RELU_LIKE
from diagnose.diagnostics import stats
from diagnose.diagnostics.layer_stats import due
from diagnose.diagnostics.layers import Layer
from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.models.modes import batch_statistics
from diagnose.results import RunMetrics

PROBES = 5  # a run's dead-unit curve gets at least this many points: each costs a forward pass of the probe batch
# (~0.38 training steps of the default CNN)


class DeadUnits(Instrument):
    """Dead units of every ReLU layer on a fixed probe batch, at initialisation, every `every` steps at most (often
    enough for PROBES points over the run) and at the `last` one; `always`: every step (the probe's one).

    A unit (a channel of a conv map, a neuron of an MLP) is dead when its output is <= 0 (zero for a ReLU) for
    every probe example and position: no gradient reaches it. Besides the share dead now, it tracks the share that
    died for good: dead now and at every probe since they first died (from step `since` on), as opposed to units
    that flicker back to life. (A unit that came back once and died again is dead, not dead for good.)
    """

    def __init__(self, model: nn.Module, layers: list[Layer], probe_x: torch.Tensor, every: int = 0, last: int = 0,
                 since: int = 0, chunk: int = 128, always: bool = False):
        self.model, self.probe_x, self.chunk = model, probe_x, chunk
        self.every, self.last, self.since, self.always = every, last, since, always
        self.layers = [layer for layer in layers if layer.kind == RELU_LIKE]
        # (units,) bool per layer, on the device: dead at some probe so far; dead once and alive at a later probe
        self.ever_dead: dict[str, torch.Tensor] = {}
        self.revived: dict[str, torch.Tensor] = {}
        self.history: dict[str, list[tuple[int, float]]] = {}  # layer -> (step, share dead)

    def after_step(self, step: int, readings: Readings) -> None:
        if self.always or due(step, self.every, self.last, PROBES):
            readings.scalars.update(self.measure(step))

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
                    # a unit alive on one chunk is alive: once no unit is left that could be dead, the other
                    # chunks cannot change the answer (a healthy net's probe is then one chunk, not four)
                    if not any(bool(dead.any()) for dead in outputs.values()):
                        break
        finally:
            for handle in handles:
                handle.remove()
        result = {}
        for name, dead in outputs.items():
            result[f"dead/{name}"] = dead.float().mean()
            if step >= self.since:
                ever = self.ever_dead.get(name, dead)
                self.revived[name] = self.revived.get(name, torch.zeros_like(dead)) | (ever & ~dead)
                self.ever_dead[name] = ever | dead
                result[f"dead_permanent/{name}"] = (dead & ~self.revived[name]).float().mean()
        return result

    def read_back(self, step: int, values: dict[str, float]) -> None:
        if self.always:  # a probe's one measurement has no history: its units are dead at initialisation
            return
        for tag, value in values.items():
            if tag.startswith("dead/"):
                self.history.setdefault(tag[len("dead/"):], []).append((step, value))

    def finish(self, metrics: RunMetrics) -> None:
        metrics.dead_history = {name: list(points) for name, points in self.history.items()}

    def state(self) -> dict[str, Any]:
        return {"ever_dead": dict(self.ever_dead), "revived": dict(self.revived),
                "history": {k: list(v) for k, v in self.history.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        device = self.probe_x.device
        self.ever_dead = {name: mask.to(device) for name, mask in state.get("ever_dead", {}).items()}
        self.revived = {name: mask.to(device) for name, mask in state.get("revived", {}).items()}
        self.history = {name: [tuple(p) for p in points] for name, points in state.get("history", {}).items()}
