"""Per-layer statistics on the steps that measure: each layer's output and the gradient w.r.t. it (by hooks attached
for that step only), each weight, its gradient and its update. What is computed is the metric table's business
(metrics.py); these instruments decide when, and hand each metric the tensors it is computed from."""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from diagnose.diagnostics import stats
from diagnose.diagnostics.layers import Layer
from diagnose.diagnostics.metrics import Seen, computed_from
from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.results import RunMetrics

# Whatever a run's length, its per-layer curves get at least this many points and its histograms this many
# snapshots; `every` and `hist_every` only bound how often a long run measures. A statistics step of the default CNN
# costs ~0.37 training steps and a snapshot ~0.6 (benchmarks/step_costs.py): with 15 and 3 (and DeadUnits' 5 probes)
# a 300-step run spends ~2.7 % of its time measuring, where 20 and 4 (and 10 probes) spent ~4.4 %
CURVE_POINTS = 15
SNAPSHOTS = 3


def stride(every: int, last: int, points: int) -> int:
    """Steps between measurements: `every` at most, and close enough for `points` of them over `last` steps (0: a
    run of unknown length, a plain loop that did not say: `every`)."""
    if every <= 0:
        return 0
    return min(every, max(1, math.ceil(last / points))) if last else every


def due(step: int, every: int, last: int, points: int) -> bool:
    """Measured at initialisation (step 1), every stride steps, and at the run's `last` step (where it is known);
    never with every=0."""
    gap = stride(every, last, points)
    return gap > 0 and (step == 1 or step == last or step % gap == 0)


@dataclass(frozen=True)
class Schedule:
    """Which steps measure: statistics and histograms by `due`; `always` measures every step (a divergence
    replay, the probe) without histograms."""

    every: int = 0
    hist_every: int = 0
    last: int = 0
    always: bool = False

    def stats(self, step: int) -> bool:
        return self.always or due(step, self.every, self.last, CURVE_POINTS)

    def histograms(self, step: int) -> bool:
        return not self.always and due(step, self.hist_every, self.last, SNAPSHOTS)


def _add(readings: Readings, source: str, x: torch.Tensor, layer: Layer, settings: object,
         norm: torch.Tensor | None = None) -> Seen:
    """Every metric of the table computed from `source` that means something for `layer` (`norm`: x's, known)."""
    seen = Seen(x, layer, settings, norm)
    for metric in computed_from(source):
        if not metric.applies(layer):
            continue
        value = metric.compute(seen)
        if value is not None:
            readings.scalars[f"{metric.name}/{layer.name}"] = value
    return seen


class ActivationStats(Instrument):
    """Each layer's output and the gradient w.r.t. it, on the measuring steps. Hooks live only for those steps and
    are removed after the backward pass, so the model runs bare in between."""

    def __init__(self, layers: list[Layer], schedule: Schedule, settings: object):
        self.layers, self.schedule, self.settings = layers, schedule, settings
        self._handles: list[RemovableHandle] = []

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        measure, draw = self.schedule.stats(step), self.schedule.histograms(step)
        if measure or draw:
            self._handles = [layer.module.register_forward_hook(self._forward_hook(layer, readings, measure, draw))
                             for layer in self.layers]

    def _forward_hook(self, layer: Layer, readings: Readings, measure: bool, draw: bool):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if measure:
                seen = _add(readings, "output", output, layer, self.settings)
                readings.finite.append((layer.name, "activation", seen.mean))  # NaN/Inf exactly when an entry is
            if draw:
                readings.histograms[f"act/{layer.name}"] = stats.histogram_sample(output)
            if output.requires_grad:
                output.register_hook(self._grad_hook(layer, readings, measure, draw))

        return hook

    def _grad_hook(self, layer: Layer, readings: Readings, measure: bool, draw: bool):
        def hook(grad: torch.Tensor) -> None:
            if measure:
                seen = _add(readings, "output_grad", grad, layer, self.settings)
                readings.finite.append((layer.name, "gradient", seen.mean))
            if draw:
                readings.histograms[f"grad/{layer.name}"] = stats.histogram_sample(grad)

        return hook

    def after_backward(self, step: int, readings: Readings) -> None:
        self.close()  # the gradient hooks sit on this step's tensors and went with them

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class WeightStats(Instrument):
    """Every conv/linear weight: its norm, its gradient, and the update the optimizer made of it (`updates`: there
    is an optimizer step to measure; the probe has none)."""

    def __init__(self, layers: list[Layer], schedule: Schedule, settings: object, updates: bool = True):
        self.layers = [layer for layer in layers if layer.role == "weight"]
        self.schedule, self.settings, self.updates = schedule, settings, updates
        self._before: list[tuple[Layer, torch.Tensor, torch.Tensor]] = []  # (layer, weight, its norm) before the step

    def after_backward(self, step: int, readings: Readings) -> None:
        layers = [layer for layer in self.layers if layer.module.weight.grad is not None] \
            if self.schedule.stats(step) else []  # only on the steps that measure: this runs every step
        if layers:
            weights = [layer.module.weight.detach() for layer in layers]
            grads = [layer.module.weight.grad.detach() for layer in layers]
            # every layer's norms in one call each, rather than a few calls per layer
            norms, grad_norms = torch._foreach_norm(weights), torch._foreach_norm(grads)
            # the largest |entry| is NaN/Inf exactly when an entry is: unlike a sum or the norm's squares, it
            # cannot overflow while every entry is finite
            biggest = torch._foreach_norm(grads, float("inf"))
            for layer, weight, grad, norm, grad_norm, big in zip(layers, weights, grads, norms, grad_norms, biggest,
                                                                 strict=True):
                _add(readings, "weight", weight, layer, self.settings, norm)
                _add(readings, "weight_grad", grad, layer, self.settings, grad_norm)
                readings.finite.append((layer.name, "weight gradient", big))
            if self.updates:
                self._before = [(layer, weight.clone(), norm) for layer, weight, norm in zip(layers, weights, norms,
                                                                                             strict=True)]
        if self.schedule.histograms(step):
            for layer in self.layers:
                weight = layer.module.weight
                readings.histograms[f"weight/{layer.name}"] = stats.histogram_sample(weight)
                if weight.grad is not None:
                    readings.histograms[f"weight_grad/{layer.name}"] = stats.histogram_sample(weight.grad)

    def after_step(self, step: int, readings: Readings) -> None:
        if not self._before:  # a histogram-only step
            return
        layers, before, before_norms = zip(*self._before, strict=True)
        moved = torch._foreach_norm(torch._foreach_sub([layer.module.weight.detach() for layer in layers], before))
        for layer, distance, norm in zip(layers, moved, before_norms, strict=True):
            # Karpathy's update:data ratio; about 1e-3 is healthy, far above or below is not
            readings.scalars[f"update_ratio/{layer.name}"] = distance / norm.clamp(min=1e-12)
        self._before = []

    def finish(self, metrics: RunMetrics) -> None:
        # all units of a layer with identical weights get identical gradients, so they stay identical forever
        metrics.symmetric_layers = [layer.name for layer in self.layers if _units_identical(layer.module.weight)]

    def close(self) -> None:
        self._before = []


def _units_identical(weight: torch.Tensor) -> bool:
    """Every output unit has the same incoming weights, and the same gradient where there is one."""
    return stats.units_identical(weight) and (weight.grad is None or stats.units_identical(weight.grad))
