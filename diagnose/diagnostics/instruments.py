"""Which instruments measure what: a training run, a divergence replay, a probe at initialisation. The order of a
list is the order the Monitor calls them in: an instrument that runs the model itself before a step (the
landscape, the noise scale) comes before the hooks attach, and one that runs it after the step (dead units) after
they are gone."""


from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from diagnose.build import Run
from diagnose.console import say
from diagnose.diagnostics.batchnorm import BatchNormStats
from diagnose.diagnostics.curvature import Curvature, stability_threshold
from diagnose.diagnostics.dead_units import DeadUnits
from diagnose.diagnostics.depth import DepthFigure
from diagnose.diagnostics.landscape import Landscape
from diagnose.diagnostics.layer_stats import ActivationStats, Schedule, WeightStats
from diagnose.diagnostics.layers import Layer, measured_layers
from diagnose.diagnostics.monitor import Instrument, Monitor
from diagnose.diagnostics.noise_scale import GradientNoise
from diagnose.sizes import check_noise_batch
from diagnose.training.batches import training_batch
from diagnose.training.evaluate import evaluate

FEWEST_POINTS = 3  # the fewest measurements of the noise scale or curvature in a run: a short run still shows a trend


def at_least_a_few(every: int, run: Run) -> int:
    """`every`, or closer where a short run would otherwise get fewer than FEWEST_POINTS measurements."""
    return min(every, max(run.total_steps // FEWEST_POINTS, 1))


def for_training(run: Run, writer: object) -> Monitor:
    """Everything `run.diag` asks for, writing to `writer`."""
    diag, model = run.diag, run.model
    layers = measured_layers(model, run.act, run.norm)
    schedule = Schedule(diag.every, diag.hist_every, last=run.total_steps)
    prepare = run.prepare
    instruments: list[Instrument] = []
    if diag.landscape:
        instruments.append(Landscape(model, run.loss_fn, lambda: run.optimizer.param_groups[0]["lr"],
                                     diag.landscape_every))
    if diag.noise_every:
        check_noise_batch(model, run.data.shape, diag.noise_batch, diag.noise_micro, run.device)  # before drawing one
        instruments.append(GradientNoise(model, run.loss_fn, partial(noise_batches, run),
                                         at_least_a_few(diag.noise_every, run), diag.noise_micro,
                                         diag.noise_max_batch // diag.noise_batch, run.batch, last=run.total_steps))
    if diag.curvature_every:
        x, y = prepare(run.data.train_x[:diag.curvature_batch]), run.data.train_y[:diag.curvature_batch]
        instruments.append(Curvature(model, run.loss_fn, x, y, at_least_a_few(diag.curvature_every, run),
                                     last=run.total_steps,
                                     threshold=partial(sgd_threshold, run.optimizer), seed=run.seed,
                                     iterations=diag.curvature_iterations, samples=diag.curvature_samples))
    train_mode_accuracy = None
    if diag.bn_eval_gap and len(run.data.val_y):
        def train_mode_accuracy() -> float:
            return evaluate(model, run.loss_fn, run.data.val_x, run.data.val_y, prepare, batch=max(run.batch, 2),
                            batch_stats=True)[1]  # BN needs 2 examples
    instruments += [ActivationStats(layers, schedule, diag), BatchNormStats(layers, schedule, train_mode_accuracy),
                    WeightStats(layers, schedule, diag)]
    probe_x = prepare(run.data.val_x[:diag.probe_size])  # held out from training, fixed for the whole run
    if diag.probe_every and len(probe_x):
        instruments.append(DeadUnits(model, layers, probe_x, diag.probe_every, last=run.total_steps,
                                     since=diag.dead_since, chunk=max(run.batch, 128)))
    elif diag.probe_every:
        say("data.val_size=0: no held-out examples for the dead-unit probe, so dead ReLUs are not measured (and "
            "there is no validation).", "yellow")
    one_evaluation = run.steps_per_epoch >= run.total_steps  # at the end: a snapshot in the middle too
    instruments.append(DepthFigure(writer, layers, run_name=Path(writer.log_dir).name,
                                   middle=run.total_steps // 2 if one_evaluation and run.total_steps > 2 else None))
    return Monitor(layers, instruments, writer, learning=lambda: run.optimizer.param_groups[0]["lr"] >= 0.1 * run.lr)


def noise_batches(run: Run, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of diag.noise_batch training examples drawn at random, prepared as training's are, from a stream of
    their own fixed by (seed, step): training's batches are untouched and a resumed run draws the same ones."""
    generator = torch.Generator(device=run.device).manual_seed(run.seed * 1_000_003 + step)
    while True:
        idx = torch.randint(len(run.data.train_y), (run.diag.noise_batch,), device=run.device, generator=generator)
        yield training_batch(run, idx, generator)


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
