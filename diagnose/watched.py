"""`diagnose.watch`: the instruments of `diagnose train` on a model and optimizer that a loop of the user's own
trains. Everything attaches from outside (diagnostics/watch.py: a forward pre-hook starts a step, the optimizer's
step hooks end it), so the loop stays as it is and needs no call per step; `close()`, or the end of a `with` block,
writes what `diagnose train` writes: the event files with the same tags, metrics.json and the findings.

    with diagnose.watch(model, optimizer, log_dir="runs/mine"):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
"""

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from diagnose.cli import config_dir
from diagnose.components.targets import TARGET
from diagnose.config import DiagConfig, Thresholds
from diagnose.console import say
from diagnose.diagnostics.dashboard import Measured, custom_scalars_layout
from diagnose.diagnostics.instruments import Batch, Sources, Span, for_training
from diagnose.diagnostics.layers import discover_layers
from diagnose.diagnostics.monitor import Monitor
from diagnose.diagnostics.watch import Watch
from diagnose.ending import end_run
from diagnose.errors import UserError
from diagnose.files import quiet_write_errors_in_threads, write_metrics
from diagnose.results import Evaluation, Final, NonFinite, RunMetrics

WINDOW = 50  # logged losses read back together: one host transfer per this many steps, a point of the train curve

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, log_dir: str | Path = "runs/watch", *,
          loss_fn: Loss | None = None, batches: Iterable[Batch] | Callable[[], Batch] | None = None,
          probe: torch.Tensor | None = None, diag: str | DiagConfig = "default", every: int | None = None,
          steps: int | None = None, seed: int = 0) -> "Watched":
    """Watch `model` trained by `optimizer` in a loop of your own, writing into `log_dir`.

    loss_fn and batches (an iterable of (inputs, labels), or a callable returning one such batch; a source of its
    own, not the loop's) turn on the instruments that run the model themselves where `diag` asks for them: the
    noise scale, the curvature, the landscape. probe: held-out inputs for the dead-unit probe. diag: a preset of
    `diagnose train` (off, default, full) or a DiagConfig; every: its statistics every N steps. steps: the last step,
    where it is known (the schedules then measure the last step too, as `diagnose train`'s do)."""
    return Watched(model, optimizer, Path(log_dir), loss_fn=loss_fn, batches=batches, probe=probe,
                   diag=diag_settings(diag, every), steps=steps, seed=seed)


def diag_settings(diag: str | DiagConfig, every: int | None = None) -> DiagConfig:
    """A `diag` preset of `diagnose train` (conf/diag/<name>.yaml) or the settings given, `every` replaced."""
    if isinstance(diag, str):
        path = config_dir() / "diag" / f"{diag}.yaml"
        if not path.is_file():
            presets = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
            raise UserError(f"diag='{diag}' is not a preset of diagnose train. Valid presets: {presets}.")
        values = OmegaConf.to_container(OmegaConf.load(path))
        values.pop("defaults", None)  # Hydra's link to the schema, which DiagConfig is
        diag = DiagConfig(name=diag, **values)
    return diag if every is None else replace(diag, every=every)


def batch_source(batches: Iterable[Batch] | Callable[[], Batch]) -> Callable[[], Batch]:
    """One batch per call: the callable itself, or the iterable's next batch, from its start again once it ends."""
    if callable(batches):
        return batches
    stream: Iterator[Batch] = iter(())

    def draw() -> Batch:
        nonlocal stream
        for _ in range(2):
            batch = next(stream, None)
            if batch is not None:
                return batch[0], batch[1]
            stream = iter(batches)
        raise UserError("diagnose.watch: batches= gave no batch; give an iterable of (inputs, labels) with at "
                        "least one, or a callable that returns one.")

    return draw


def examples(draw: Callable[[], Batch], count: int) -> Batch:
    """The first `count` examples of the batches `draw` gives, as one batch."""
    xs, ys = [], []
    while sum(len(y) for y in ys) < count:
        x, y = draw()
        xs.append(x)
        ys.append(y)
    return torch.cat(xs)[:count], torch.cat(ys)[:count]


class Watched:
    """A model and its optimizer under watch (see `watch`); `close()` ends it and returns the run's metrics."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, log_dir: Path, *, loss_fn: Loss | None,
                 batches: Iterable[Batch] | Callable[[], Batch] | None, probe: torch.Tensor | None, diag: DiagConfig,
                 steps: int | None, seed: int):
        self.model, self.optimizer, self.log_dir, self.loss_fn = model, optimizer, log_dir, loss_fn
        self.draw = None if batches is None else batch_source(batches)
        self.probe, self.diag, self.steps, self.seed = probe, diag, steps or 0, seed
        self.lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        # a watched network is the user's own: findings say their remedies in its terms, not the tool's keys
        self.config: dict[str, Any] = {"diag": asdict(diag), "model": {"name": TARGET},
                                       "optim": {"name": type(optimizer).__name__.lower()}}
        log_dir.mkdir(parents=True, exist_ok=True)
        quiet_write_errors_in_threads()
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.hooks = Watch(model, optimizer, begin=self._begin)
        self.history: list[Evaluation] = []
        self.train_curve: list[tuple[int, float]] = []
        self.train_acc: float | None = None
        self._logged: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (step, loss, acc), on the device
        self._loss_nonfinite: NonFinite | None = None
        self.metrics: RunMetrics | None = None
        self.started = time.perf_counter()

    @property
    def step(self) -> int:
        """The optimizer steps watched so far."""
        return self.hooks.step

    def _begin(self, x: torch.Tensor) -> Monitor:
        """The instruments, once the first step's inputs `x` show the model's layers and the batch size."""
        discovery = discover_layers(self.model, x)
        if discovery.unseen:
            say(discovery.unseen, "yellow")
        layers = discovery.layers
        self.config.update(batch=len(x))
        draw, diag, loss_fn = self.draw, self.diag, self.loss_fn
        sources = Sources(loss_fn=loss_fn, probe=self.probe)
        if draw is not None and loss_fn is not None:
            sources.noise = lambda step: iter(lambda: examples(draw, diag.noise_batch), None)
            sources.landscape = lambda step: draw()
            if diag.curvature_every:
                sources.curvature = examples(draw, diag.curvature_batch)
        measured = Measured(layers=diag.every > 0, dead=diag.probe_every > 0 and self.probe is not None,
                            bn_modes=False, noise=diag.noise_every > 0 and sources.noise is not None,
                            curvature=diag.curvature_every > 0 and sources.curvature is not None)
        self.writer.add_custom_scalars(custom_scalars_layout(layers, measured))
        span = Span(last=self.steps, batch=len(x), seed=self.seed)
        return for_training(self.model, self.optimizer, layers, diag, sources, span, self.writer)

    def log(self, loss: torch.Tensor | float | None = None, acc: torch.Tensor | float | None = None,
            val_loss: float | None = None, val_acc: float | None = None) -> None:
        """The loop's own numbers at the step just done, all optional: the training loss (and accuracy) of its
        batch, kept on the device and read back WINDOW steps at a time; a validation loss and accuracy, which are an
        evaluation (the instruments measure what they measure then)."""
        if loss is not None:
            device = next(self.model.parameters()).device  # floats and tensors alike, read back as one
            self._logged.append((self.step, torch.as_tensor(loss, device=device).detach().float(),
                                 None if acc is None else torch.as_tensor(acc, device=device).detach().float()))
            if len(self._logged) >= WINDOW:
                self._read_logged()
        if val_loss is not None and val_acc is not None:
            evaluation = Evaluation(self.step, 0.0, float(val_loss), float(val_acc))
            self.writer.add_scalar("val/loss", evaluation.val_loss, self.step)
            self.writer.add_scalar("val/acc", evaluation.val_acc, self.step)
            self.hooks.on_evaluation(evaluation)
            self.history.append(evaluation)

    def _read_logged(self) -> None:
        """The logged window's mean loss (and accuracy) as a point of the train curve: one host transfer."""
        if not self._logged:
            return
        steps = [step for step, _, _ in self._logged]
        accs = [acc for _, _, acc in self._logged if acc is not None]
        losses_now = [loss for _, loss, _ in self._logged]
        mean_acc = torch.stack(accs).mean() if accs else torch.zeros_like(losses_now[0])
        *losses, acc = torch.stack([*losses_now, mean_acc]).tolist()
        self._logged = []
        bad = next((step for step, loss in zip(steps, losses, strict=True) if not math.isfinite(loss)), None)
        if bad is not None and self._loss_nonfinite is None:
            self._loss_nonfinite = NonFinite(bad, "loss", "loss")
        mean = sum(losses) / len(losses)
        self.train_curve.append((steps[-1], mean))
        self.writer.add_scalar("train/loss", mean, steps[-1])
        if accs:
            self.train_acc = acc
            self.writer.add_scalar("train/acc", acc, steps[-1])
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], steps[-1])

    def close(self, status: str = "completed", error: str | None = None) -> RunMetrics:
        """Detach from the model and optimizer; write the findings (printed too), metrics.json and the event files
        into log_dir. Closing again returns the same metrics."""
        if self.metrics is not None:
            return self.metrics
        self.hooks.detach()
        self._read_logged()
        nonfinite = self.hooks.nonfinite or self._loss_nonfinite
        final = Final(train_loss=self.train_curve[-1][1] if self.train_curve else None, train_acc=self.train_acc)
        if self.history:
            final.val_loss, final.val_acc = self.history[-1].val_loss, self.history[-1].val_acc
        metrics = RunMetrics(status="diverged" if nonfinite and status == "completed" else status, steps=self.step,
                             lr=self.lr, final=final, history=self.history, train_curve=self.train_curve,
                             nonfinite=nonfinite, config=self.config, error=error)
        if self.hooks.monitor is not None:
            self.hooks.monitor.finish(metrics)
        metrics.wall_time_s = time.perf_counter() - self.started
        self.metrics = metrics
        if status == "failed":  # the loop's error goes on up: no findings on a run cut short by a bug
            self.writer.close()
            write_metrics(self.log_dir, metrics)
            return metrics
        return end_run(self.log_dir, metrics, Thresholds(name="default"), self.writer)

    def __enter__(self) -> "Watched":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        elif issubclass(kind, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed", f"{kind.__name__}: {error}")


