"""`diagnose probe`: how a signal propagates through the network at initialisation, layer by layer."""

from pathlib import Path

import torch
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import build_loss, build_model, load_data, pick_device
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.norms import NORMS
from diagnose.config import ProbeConfig, to_dict
from diagnose.console import console, say
from diagnose.data import to_input
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.instruments import for_probe
from diagnose.diagnostics.layers import measured_layers
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.ending import end_run
from diagnose.registry import lookup
from diagnose.results import Final, LayerRecord, RunMetrics


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
    end_run(out_dir, metrics, config.findings, writer)
    say(f"Probe folder: {out_dir} (metrics.json, TensorBoard events: tensorboard --logdir {out_dir})")
    return metrics


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
