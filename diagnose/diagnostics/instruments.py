"""Which instruments measure what: a training run, a divergence replay, a probe at initialisation. The order of a
list is the order the Monitor calls them in: an instrument that runs the model itself before a step (the
landscape, the noise scale) comes before the hooks attach, and one that runs it after the step (dead units) after
they are gone.

The instruments see a model, its optimizer and the batches it is measured on (`Sources`), never a training run: a
plain PyTorch loop under `diagnose.watch` and `diagnose train` build the same list from them."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diagnose.config import DiagConfig
from diagnose.diagnostics.batchnorm import BatchNormStats
from diagnose.diagnostics.curvature import Curvature, stability_threshold
from diagnose.diagnostics.dead_units import DeadUnits
from diagnose.diagnostics.depth import DepthFigure
from diagnose.diagnostics.landscape import Landscape
from diagnose.diagnostics.layer_stats import ActivationStats, Schedule, WeightStats
from diagnose.diagnostics.layers import Layer
from diagnose.diagnostics.monitor import Instrument, Monitor
from diagnose.diagnostics.noise_scale import GradientNoise

FEWEST_POINTS = 3  # the fewest measurements of the noise scale or curvature in a run: a short run still shows a trend

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs as the model takes them, integer labels)


@dataclass
class Sources:
    """The examples the instruments that run the model themselves run it on; None leaves that instrument out."""

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (outputs, labels) -> loss
    probe: torch.Tensor | None = None  # inputs held out from training, fixed for the run: the dead-unit probe
    noise: Callable[[int], Iterator[Batch]] | None = None  # step -> batches of diag.noise_batch examples
    curvature: Batch | None = None  # a fixed batch of diag.curvature_batch examples
    landscape: Callable[[int], Batch] | None = None  # step -> the batch to measure at that step's weights
    bn_accuracy: Callable[[], float] | None = None  # held-out accuracy with BN on each batch's statistics


@dataclass(frozen=True)
class Span:
    """What a monitor knows of the run it measures."""

    last: int = 0  # the last step (0: not known, a plain loop that did not say)
    batch: int = 0  # the training batch's size, drawn beside the noise scale
    seed: int = 0  # the curvature's random directions
    middle: int | None = None  # a depth figure at the first measurement from this step on (a run of one evaluation)


def at_least_a_few(every: int, last: int) -> int:
    """`every`, or closer where a short run of `last` steps would otherwise get fewer than FEWEST_POINTS
    measurements."""
    return min(every, max(last // FEWEST_POINTS, 1)) if last else every


def for_training(model: nn.Module, optimizer: torch.optim.Optimizer, layers: list[Layer], diag: DiagConfig,
                 sources: Sources, span: Span, writer: Any) -> Monitor:
    """Everything `diag` asks for that `sources` allow, writing to `writer`."""
    schedule = Schedule(diag.every, diag.hist_every, last=span.last)
    loss_fn = sources.loss_fn
    instruments: list[Instrument] = []
    if diag.landscape and sources.landscape is not None and loss_fn is not None:
        instruments.append(Landscape(model, loss_fn, lambda: optimizer.param_groups[0]["lr"], diag.landscape_every,
                                     sources.landscape))
    if diag.noise_every and sources.noise is not None and loss_fn is not None:
        instruments.append(GradientNoise(model, loss_fn, sources.noise, at_least_a_few(diag.noise_every, span.last),
                                         diag.noise_micro, diag.noise_max_batch // diag.noise_batch, span.batch,
                                         last=span.last))
    if diag.curvature_every and sources.curvature is not None and loss_fn is not None:
        instruments.append(Curvature(model, loss_fn, *sources.curvature,
                                     at_least_a_few(diag.curvature_every, span.last), last=span.last,
                                     threshold=partial(sgd_threshold, optimizer), seed=span.seed,
                                     iterations=diag.curvature_iterations, samples=diag.curvature_samples))
    bn_accuracy = sources.bn_accuracy if diag.bn_eval_gap else None
    instruments += [ActivationStats(layers, schedule, diag), BatchNormStats(layers, schedule, bn_accuracy),
                    WeightStats(layers, schedule, diag)]
    if diag.probe_every and sources.probe is not None and len(sources.probe):
        instruments.append(DeadUnits(model, layers, sources.probe, diag.probe_every, last=span.last,
                                     since=diag.dead_since, chunk=max(span.batch, 128)))
    instruments.append(DepthFigure(writer, layers, run_name=Path(writer.log_dir).name, middle=span.middle))
    start = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])  # a schedule's start
    return Monitor(layers, instruments, writer, learning=lambda: optimizer.param_groups[0]["lr"] >= 0.1 * start)


def sgd_threshold(optimizer: torch.optim.Optimizer) -> float | None:
    """The curvature plain or heavy-ball SGD is stable along at its current lr; None for other optimizers."""
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    group = optimizer.param_groups[0]
    if group["lr"] <= 0:
        return None
    return stability_threshold(group["lr"], group.get("momentum", 0.0), group.get("nesterov", False))


def for_replay(layers: list[Layer], settings: object) -> Monitor:
    """Every layer's statistics at every step, written nowhere: to find the first non-finite one."""
    always = Schedule(always=True)
    return Monitor(layers, [ActivationStats(layers, always, settings), WeightStats(layers, always, settings)])


def for_probe(model: torch.nn.Module, layers: list[Layer], x: torch.Tensor, settings: object) -> Monitor:
    """One batch, every statistic and the dead units on the batch itself, written nowhere (the probe writes its own
    series, against depth)."""
    always = Schedule(always=True)
    return Monitor(layers, [ActivationStats(layers, always, settings), BatchNormStats(layers, always),
                            WeightStats(layers, always, settings, updates=False),
                            DeadUnits(model, layers, x, chunk=len(x), always=True)])
