"""TensorBoard's Custom Scalars layout, built from the model and what the run measures: only charts this run fills
(no per-layer chart for a run that measures no per-layer statistics, diag=off), each comparing like with like (one
role of layer: conv/linear layers, norms or activations; the logits apart), its lines in forward order, the
quantities that span decades as log10, and the run's loss and accuracy first."""

import re
from dataclasses import dataclass
from typing import Any

from diagnose.components.norms import BATCH
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.layers import Layer, depth_labels
from diagnose.diagnostics.metrics import ROLES

Layout = dict[str, dict[str, list[Any]]]
PROBED = ("dead", "dead_permanent")  # the metrics of the dead-unit probe (DeadUnits), measured on a schedule of its own


@dataclass(frozen=True)
class Measured:
    """What a run measures, as far as its charts go: a chart of anything else would stay empty ("Matches (0)")."""

    layers: bool = True  # per-layer statistics (diag.every > 0)
    dead: bool = True  # the dead-unit probe (diag.probe_every > 0, on held-out examples)
    bn_modes: bool = True  # BN's val accuracy in train vs eval mode (diag.bn_eval_gap, with a validation split)
    noise: bool = False  # the gradient noise scale (diag.noise_every > 0)
    curvature: bool = False  # the loss's sharpness (diag.curvature_every > 0)

    @classmethod
    def of(cls, diag: Any, validation: bool) -> "Measured":
        """From the run's `diag` settings; `validation`: it has held-out examples."""
        return cls(layers=diag.every > 0, dead=diag.probe_every > 0 and validation,
                   bn_modes=diag.bn_eval_gap and validation, noise=diag.noise_every > 0,
                   curvature=diag.curvature_every > 0)


def custom_scalars_layout(layers: list[Layer], measured: Measured = Measured()) -> Layout:
    """For SummaryWriter.add_custom_scalars, which may be called only once per writer."""
    labels = depth_labels(layers)
    weights = [layer for layer in layers if layer.role == "weight"]
    head = weights[-1] if weights else None  # its output is the logits: a scale of its own
    layout: Layout = {"training": {"loss": _chart(r"^(train|val|test)/loss$"),
                                   "accuracy": _chart(r"^(train|val|test)/acc$"),
                                   "learning rate": _chart(r"^train/lr$")}}
    if head is not None and measured.layers:
        logits = re.escape(labels[head.name])
        layout["activations"] = {f"logits ({head.name}'s output): std and mean":
                                 _chart(f"^act_std/{logits}$", f"^act_mean/{logits}$")}
    for metric in metric_table.LAYER_METRICS:
        if not (measured.dead if metric.name in PROBED else measured.layers):
            continue
        for role in metric.roles if metric.chart else ():
            members = [layer for layer in layers if layer.role == role and metric.applies(layer)
                       and not (layer is head and metric.of == "output")]
            if not members:
                continue
            series = f"{metric.name}_log10" if metric.log10 else metric.name
            title = metric.title + (f": {ROLES[role]}" if len(metric.roles) > 1 else "")
            title = f"log10 {title}" if metric.log10 else title
            names = "|".join(re.escape(labels[layer.name]) for layer in members)
            tags = [f"^{series}/({names})$"] + ([f"^reference/{series}$"] if metric.reference else [])
            layout.setdefault(metric.chart, {})[title] = _chart(*tags)
    if measured.noise:
        layout["training"]["gradient noise scale B_simple (and its lower bound) against the batch size"] = \
            _chart(r"^noise/(b_simple|b_simple_low|batch)$")
    if measured.curvature:
        layout["training"]["sharpness λ_max against the stability threshold 2(1+momentum)/lr"] = \
            _chart(r"^curvature/(lambda_max|threshold)$")
        layout["training"]["Hessian trace"] = _chart(r"^curvature/trace$")
    if measured.bn_modes and any(layer.kind == BATCH for layer in layers):
        layout.setdefault("normalisation", {})["val accuracy: BN in train vs eval mode"] = _chart(r"^bn/val_acc_")
    return layout


def _chart(*tags: str) -> list[Any]:
    return ["Multiline", list(tags)]
