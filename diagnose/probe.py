"""`diagnose probe`: how a signal propagates through the network at initialisation, layer by layer."""

import math
from pathlib import Path

import torch
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import build_loss, build_model, load_data, pick_device
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.layers import width_multiplier
from diagnose.components.norms import BATCH, NORMS
from diagnose.config import ProbeConfig, to_dict
from diagnose.console import console, say
from diagnose.data.batches import to_input
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.instruments import for_probe
from diagnose.diagnostics.jacobian import jacobian_spectrum
from diagnose.diagnostics.layers import measured_layers
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.ending import end_run
from diagnose.registry import lookup, settings
from diagnose.results import Final, JacobianSpectrum, LayerRecord, RunMetrics


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
    torch.manual_seed(config.seed)
    x, y, shape, classes = probe_batch(config, device)
    model = build_model(config, shape, classes).to(device).train()
    loss_fn = build_loss(config.loss, classes).to(device)
    act, norm = lookup(ACTIVATIONS, config.act.name, "act"), lookup(NORMS, config.norm.name, "norm")
    layers = measured_layers(model, act, norm)

    monitor = for_probe(model, layers, x, config)
    monitor.before_step(1, x, y)
    loss = loss_fn(model(x), y)
    loss.backward()
    monitor.after_backward(1)
    nonfinite = monitor.after_step(1)
    metrics = RunMetrics(status="completed", command="probe", nonfinite=nonfinite, final=Final(loss=loss.item()),
                         classes=classes, config=to_dict(config))
    monitor.finish(metrics)

    acts = [(name, record) for name, record in metrics.layers.items() if record.role == "act"]
    writer = SummaryWriter(str(out_dir))
    for depth, (_, record) in enumerate(acts, start=1):
        for metric in columns():
            if metric.name in record.values:
                writer.add_scalar(f"probe/{metric.name}", record.values[metric.name], depth)
    console.print(probe_table(acts))
    if config.probe.jacobian != "off":
        metrics.jacobian = probe_jacobian(model, x[:config.probe.jacobian_examples], config, writer)
    end_run(out_dir, metrics, config.findings, writer)
    say(f"Probe folder: {out_dir} (metrics.json, TensorBoard events: tensorboard --logdir {out_dir})")
    return metrics


def probe_jacobian(model: torch.nn.Module, xs: torch.Tensor, config: ProbeConfig,
                   writer: SummaryWriter) -> JacobianSpectrum | None:
    """The input-output Jacobian's spectrum per depth, with mean-field theory's prediction: printed, and written
    as scalars and singular-value histograms against depth."""
    act, norm = lookup(ACTIVATIONS, config.act.name, "act"), lookup(NORMS, config.norm.name, "norm")
    if norm.kind == BATCH:
        say(f"norm={config.norm.name} normalises with the batch's statistics: the Jacobian of one example is not "
            f"defined, so its spectrum is not measured (try norm=none, gn or ln).", "yellow")
        return None
    # the prediction is for elementwise activations without normalisation
    activation = act.make(**settings(config.act)) if act.make is not None else None
    elementwise = activation is not None and width_multiplier(activation) == 1
    phi = activation.double() if elementwise and norm.make is None else None
    spectrum, depths = jacobian_spectrum(model, xs, phi, config.probe.jacobian)
    for depth in depths:
        writer.add_scalar("jacobian/mean_sq", depth.mean_sq, depth.depth)
        writer.add_scalar("jacobian/std_sq", depth.std_sq, depth.depth)
        if depth.max_over_min is not None and math.isfinite(depth.max_over_min):
            writer.add_scalar("jacobian/max_over_min_log10", math.log10(depth.max_over_min), depth.depth)
            writer.add_scalar("jacobian/zero_share", depth.zero_share, depth.depth)
        if depth.singular_values:
            writer.add_histogram("jacobian/singular_values", torch.tensor(depth.singular_values), depth.depth)
    console.print(jacobian_table(spectrum))
    return spectrum


def jacobian_table(spectrum: JacobianSpectrum) -> Table:
    """Per depth (at most ~12 rows: every k-th and the last), the squared singular values' mean, std and range."""
    table = Table(title=f"input-output Jacobian J = dh_l/dx at initialisation ({spectrum.method}), squared singular "
                        f"values σ²", header_style="bold")
    for column in ("depth", "mean σ²", "std σ²", "max/min σ² (non-zero)", "σ² = 0", "χ (growth per layer)"):
        table.add_column(column, justify="right")
    rows = spectrum.depths
    every = max(1, math.ceil(len(rows) / 12))
    shown = [row for i, row in enumerate(rows) if i % every == 0 or i == len(rows) - 1]
    for depth, mean, std, spread, zeros, growth in shown:
        table.add_row(str(depth), f"{mean:.3g}", f"{std:.3g}", "-" if spread is None else f"{spread:.3g}",
                      "-" if zeros is None else f"{zeros:.0%}", "-" if growth is None else f"{growth:.3g}")
    predicted = "no prediction (normalisation or a non-elementwise activation)" if spectrum.chi_predicted is None \
        else f"predicted {spectrum.chi_predicted:.3f} (mean-field, layer by layer; {spectrum.chi_fixed_point:.3f} " \
             f"at the fixed point)"
    measured = "-" if spectrum.chi_measured is None else f"{spectrum.chi_measured:.3f}"
    scale = "-" if spectrum.depth_scale is None else "over 1000 layers (critical)" if spectrum.depth_scale > 1000 \
        else f"{spectrum.depth_scale:.3g} layers"
    table.caption = f"χ₁ measured {measured}, {predicted}; σ_w² = {spectrum.sigma_w2:.3g}; depth scale ξ = {scale}"
    return table


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
