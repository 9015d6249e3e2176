"""`diagnose probe`: how a signal propagates through the network at initialisation, layer by layer."""

import math
import time
from pathlib import Path
from types import TracebackType

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from diagnose import console as terminal
from diagnose.build import activation_of, build_loss, build_model, load_data, model_layers, norm_of, pick_device
from diagnose.components.norms import BATCH
from diagnose.components.targets import is_target
from diagnose.config import ProbeConfig, to_dict
from diagnose.console import console, print_tables, say
from diagnose.data.batches import to_input
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.instruments import for_probe
from diagnose.diagnostics.jacobian import DepthSpectrum, blocks_of, jacobian_spectrum, mean_field_phi
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.ending import end_run
from diagnose.registry import settings
from diagnose.results import Final, JacobianSpectrum, LayerRecord, RunMetrics
from diagnose.sizes import check_exact_jacobian, check_probe


def columns() -> list[LayerMetric]:
    """The metrics with a probe column, in the metric table's order."""
    return [metric for metric in metric_table.LAYER_METRICS if metric.probe]


def probe_batch(config: ProbeConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], int]:
    """(inputs, labels, one input's shape, number of classes) for the probe."""
    batch = config.probe.batch
    if config.probe.input == "gaussian":
        shape, classes = tuple(config.probe.shape), config.probe.classes
        x = torch.randn(batch, *shape, device=device)
        return x, torch.randint(0, classes, (batch,), device=device), shape, classes
    data = load_data(config.data, device)
    x = to_input(data.train_x[:batch], data.mean, data.std, center=config.data.center)
    return x, data.train_y[:batch], data.shape, data.n_classes


def probe(config: ProbeConfig, out_dir: Path) -> RunMetrics:
    """Measure one forward/backward pass; write TensorBoard scalars (x = layer index) and metrics.json."""
    device = pick_device(config.device)
    check_probe(config, device, lambda shape, classes: build_model(config, shape, classes))  # before allocating
    torch.manual_seed(config.seed)
    x, y, shape, classes = probe_batch(config, device)
    model = build_model(config, shape, classes).to(device).train()
    loss_fn = build_loss(config.loss, classes).to(device)
    layers = model_layers(config, model, x, activation_of(config.act), norm_of(config.norm))

    monitor = for_probe(model, layers, x, config)
    monitor.before_step(1, x)
    loss = loss_fn(model(x), y)
    loss.backward()
    monitor.after_backward(1)
    nonfinite = monitor.after_step(1)
    metrics = RunMetrics(status="completed", command="probe", nonfinite=nonfinite, final=Final(loss=loss.item()),
                         classes=classes, config=to_dict(config))
    monitor.finish(metrics)

    acts = [(name, record) for name, record in metrics.layers.items() if record.role == "act"]
    if not acts:  # a network whose activations are functions (said above): the layers measured in their place
        acts = [(name, record) for name, record in metrics.layers.items() if record.role == "norm"] or [
            (name, record) for name, record in metrics.layers.items() if record.role == "weight"]
    writer = SummaryWriter(str(out_dir))
    for depth, (_, record) in enumerate(acts, start=1):
        for metric in columns():
            if metric.name in record.values:
                writer.add_scalar(f"probe/{metric.name}", record.values[metric.name], depth)
    print_tables(probe_table(acts), console, keys=2)  # the layer names whole at any width
    if config.probe.jacobian != "off":
        metrics.jacobian = probe_jacobian(model, x[:config.probe.jacobian_examples], config, writer)
    end_run(out_dir, metrics, config.findings, writer)
    say(f"Probe folder: {out_dir} (metrics.json, TensorBoard events: tensorboard --logdir {out_dir})")
    return metrics


def probe_jacobian(model: torch.nn.Module, xs: torch.Tensor, config: ProbeConfig,
                   writer: SummaryWriter) -> JacobianSpectrum | None:
    """The input-output Jacobian's spectrum per depth, with mean-field theory's prediction: printed, and written
    as scalars and singular-value histograms against depth."""
    if is_target(config.model):
        say("The Jacobian per depth is measured between the tool's own blocks (model=cnn or mlp): not on your "
            "model, whose layers probe measured above.", "yellow")
        return None
    act, norm = activation_of(config.act), norm_of(config.norm)
    if norm.kind == BATCH:
        say(f"norm={config.norm.name} normalises with the batch's statistics: the Jacobian of one example is not "
            f"defined, so its spectrum is not measured (try norm=none, gn or ln).", "yellow")
        return None
    # the prediction is for elementwise activations without normalisation
    activation = act.make(**settings(config.act)) if act.make is not None else None
    phi = mean_field_phi(activation) if activation is not None and norm.make is None else None
    check_exact_jacobian(model, xs[0], config.probe.jacobian)
    with JacobianProgress() as progress:
        spectrum, depths = jacobian_spectrum(model, xs, phi, config.probe.jacobian, progress)
    if len(depths) < len(blocks_of(model)):
        say(f"The Jacobian is not finite from depth {len(depths) + 1} on (the signal overflows float32 there): its "
            f"spectrum is measured to depth {len(depths)}.", "yellow")
    for depth in depths:
        writer.add_scalar("jacobian/mean_sq", depth.mean_sq, depth.depth)
        writer.add_scalar("jacobian/std_sq", depth.std_sq, depth.depth)
        if depth.max_over_min is not None and math.isfinite(depth.max_over_min):
            writer.add_scalar("jacobian/max_over_min_log10", math.log10(depth.max_over_min), depth.depth)
        if depth.zero_share is not None:
            writer.add_scalar("jacobian/zero_share", depth.zero_share, depth.depth)
        if depth.singular_values:
            writer.add_histogram("jacobian/singular_values", torch.tensor(depth.singular_values), depth.depth)
    print_tables(jacobian_table(spectrum, depths), console)
    return spectrum


class JacobianProgress:
    """How far the Jacobian's computation is (minutes for the default 30 x 1000 MLP on a busy CPU): a rich bar on a
    terminal; elsewhere (a file, `| tee`, jobs side by side) a plain line each time it starts something new."""

    def __init__(self) -> None:
        self.title = "Jacobian"
        # side by side (hydra/launcher=local) bars would draw over each other: RunProgress's rule
        self.live = console.is_terminal and not terminal._job
        self.bar = Progress(TextColumn(f"[bold]{self.title}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                            disable=not self.live)
        self.task = self.bar.add_task("", total=None)
        self.doing, self.start = "", time.perf_counter()

    def __enter__(self) -> "JacobianProgress":
        self.bar.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.bar.stop()

    def __call__(self, done: int, total: int, doing: str) -> None:
        self.bar.update(self.task, completed=done, total=total, description=doing)
        if doing != self.doing and not self.live:
            say(f"{self.title}: {doing} ({time.perf_counter() - self.start:.1f} s)")
        self.doing = doing


def jacobian_table(spectrum: JacobianSpectrum, depths: list[DepthSpectrum]) -> Table:
    """Per depth (at most ~12 rows: every k-th and the last), the squared singular values' mean, std and range, and
    how many are exactly 0 or too small for J's precision."""
    table = Table(title=f"input-output Jacobian J = dh_l/dx at initialisation ({spectrum.method}), squared singular "
                        f"values σ²", header_style="bold")
    for column in ("depth", "mean σ²", "std σ²", "max/min σ² (non-zero)", "σ² = 0 (cut off)",
                   "σ² below precision", "χ (growth per layer)"):
        table.add_column(column, justify="right")
    every = max(1, math.ceil(len(depths) / 12))
    shown = [i for i in range(len(depths)) if i % every == 0 or i == len(depths) - 1]
    for i in shown:
        d, growth = depths[i], spectrum.depths[i][5]
        if d.max_over_min is None:  # beyond what J's precision resolves, or not measured (moments)
            spread = "-" if d.resolution is None else f"> {d.resolution:.2g}"
        else:  # nan: no σ² is non-zero
            spread = f"{d.max_over_min:.3g}" if math.isfinite(d.max_over_min) else "-"
        table.add_row(str(d.depth), f"{d.mean_sq:.3g}", f"{d.std_sq:.3g}", spread, share(d.zero_share),
                      share(d.unresolved_share), "-" if growth is None else f"{growth:.3g}")
    predicted = "no prediction (normalisation or a non-elementwise activation)" if spectrum.chi_predicted is None \
        else f"predicted {spectrum.chi_predicted:.3f} (mean-field, layer by layer; {spectrum.chi_fixed_point:.3f} " \
             f"at the fixed point)"
    measured = "-" if spectrum.chi_measured is None else f"{spectrum.chi_measured:.3f}"
    scale = "-" if spectrum.depth_scale is None else "over 1000 layers (critical)" if spectrum.depth_scale > 1000 \
        else f"{spectrum.depth_scale:.3g} layers"
    table.caption = f"χ₁ measured {measured}, {predicted}; σ_w² = {spectrum.sigma_w2:.3g}; depth scale ξ = {scale}"
    return table


def share(value: float | None) -> str:
    """A share as a whole percentage, "<1%" for a few, "-" when not measured."""
    return "-" if value is None else "<1%" if 0 < value < 0.005 else f"{value:.0%}"


def probe_table(acts: list[tuple[str, LayerRecord]]) -> Table:
    table = Table(title="one batch at initialisation, per layer", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("layer")
    shown = columns()
    for metric in shown:
        table.add_column(metric.probe, justify="right")
    for depth, (name, record) in enumerate(acts, start=1):
        table.add_row(str(depth), name, *(f"{record.values[m.name]:.3g}" if m.name in record.values else ""
                                          for m in shown))
    return table
