"""`diagnose probe`: how a signal propagates through the network at initialisation, layer by layer."""

from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import build_loss, build_model, load_data, pick_device
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.norms import NORMS
from diagnose.config import ProbeConfig, to_dict
from diagnose.console import console, print_findings
from diagnose.data import to_input
from diagnose.diagnostics.monitor import Diagnostics
from diagnose.diagnostics.probes import DeadUnitProbe
from diagnose.diagnostics.stats import units_identical
from diagnose.findings import as_dicts, as_markdown, run_findings
from diagnose.registry import lookup
from diagnose.training.outputs import write_metrics

COLUMNS = {"act_mean": "act mean", "act_std": "act std", "grad_std": "grad std", "dead": "dead",
           "saturation": "saturated"}


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


def probe(cfg: ProbeConfig, out_dir: Path) -> dict[str, Any]:
    """Measure one forward/backward pass; write TensorBoard scalars (x = layer index) and metrics.json."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    x, y, shape, classes = probe_batch(cfg, device)
    model = build_model(cfg, shape, classes).to(device).train()
    loss_fn = build_loss(cfg.loss, classes).to(device)

    # no writer: the probe writes its own scalars, against depth (finish(write=False) below)
    act, norm = lookup(ACTIVATIONS, cfg.act.name, "act"), lookup(NORMS, cfg.norm.name, "norm")
    diag = Diagnostics(model, None, cfg, act, norm)
    diag.start(1, watch=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    diag.after_backward()
    nonfinite = diag.finish(1, write=False)
    dead = DeadUnitProbe(model, diag.layers, x, chunk=len(x)).measure(0)
    diag.latest.update({tag: value.item() for tag, value in dead.items()})
    layers = diag.by_layer()
    # zero init: all units of a layer get identical gradients, so they stay identical forever
    symmetric = [name for name, weight in diag.weights if weight.grad is not None and units_identical(weight)
                 and units_identical(weight.grad)]

    acts = [(name, values) for name, values in layers.items() if name.endswith(".act")]
    metrics = {"status": "completed", "command": "probe", "steps": 0, "layers": layers,
               "nonfinite": vars(nonfinite) if nonfinite else None, "symmetric_layers": symmetric,
               "final": {"loss": loss.item()}, "config": to_dict(cfg)}
    findings = run_findings(metrics, cfg.findings)
    metrics["findings"] = as_dicts(findings)
    with SummaryWriter(str(out_dir)) as writer:
        for depth, (_, values) in enumerate(acts, start=1):
            for metric in COLUMNS:
                if metric in values:
                    writer.add_scalar(f"probe/{metric}", values[metric], depth)
        if findings:
            writer.add_text("findings", as_markdown(findings))
    write_metrics(out_dir, metrics)
    console.print(probe_table(acts))
    print_findings(findings)
    return metrics


def probe_table(acts: list[tuple[str, dict[str, float]]]) -> Table:
    table = Table(title="one batch at initialisation, per layer", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("layer")
    for title in COLUMNS.values():
        table.add_column(title, justify="right")
    for depth, (name, values) in enumerate(acts, start=1):
        table.add_row(str(depth), name, *(f"{values[m]:.3g}" if m in values else "" for m in COLUMNS))
    return table

