"""The per-layer metrics, each declared once: its TensorBoard tag, chart, report and probe column, whether a run mean
is kept, and, for the metrics of a layer's output or output gradient, how it is computed. The dashboard, the
report, the probe table and the instruments all read this table.

A metric of a tensor the hooks already see is one entry here: `of` names the tensor ("output", "output_grad",
"weight", "weight_grad"), `compute` turns a `Seen` of it into a 0-d tensor (or None where it does not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from diagnose.kinds import BATCH, RELU_LIKE, SATURATING

if TYPE_CHECKING:  # torch is imported where tensors are made: `diagnose report` reads this table without it
    import torch

    from diagnose.diagnostics.layers import Layer


def _stats():  # the module of tensor statistics (torch), imported on first use
    from diagnose.diagnostics import stats

    return stats


class Seen:
    """One tensor at one layer on a measuring step, with the statistics several metrics share computed once."""

    def __init__(self, x: torch.Tensor, layer: Layer, settings: Any, norm: torch.Tensor | None = None):
        self.x, self.layer, self.settings = x.detach(), layer, settings
        self._norm = norm  # computed already, with the other layers' in one call (WeightStats)

    @cached_property
    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _stats().mean_std(self.x)

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_std[0]

    @property
    def std(self) -> torch.Tensor:
        return self.mean_std[1]

    @property
    def norm(self) -> torch.Tensor:
        if self._norm is None:
            self._norm = _stats().norm_from(self.mean, self.std, self.x.numel())
        return self._norm


ROLES = {"weight": "conv/linear layers", "norm": "norm layers", "act": "activations"}


def _every_layer(layer: Layer) -> bool:
    return True


@dataclass(frozen=True)
class LayerMetric:
    name: str  # tags are <name>/<depth label of the layer>
    title: str  # its Custom Scalars charts, one per layer role it is charted for
    chart: str | None  # the dashboard category its charts are in; None: not charted
    roles: tuple[str, ...] = ("weight", "norm", "act")  # the layers it is charted for, a chart per role
    applies: Callable[[Layer], bool] = _every_layer  # the layers it means something for
    log10: bool = False  # it spans decades: charted as log10 (a <name>_log10/ series beside it)
    column: str | None = None  # its column in `diagnose report`'s layer table
    probe: str | None = None  # its column in `diagnose probe`'s table (and a probe/<name> series against depth)
    run_mean: bool = False  # also kept as a mean over the measuring steps while the run learns: findings read that
    history: bool = False  # also kept at every measuring step (metrics.json's layer_history): findings read the run
    reference: float | None = None  # a healthy value, drawn as a line on its chart
    of: str | None = None  # what the generic instruments compute it from; None: an instrument of its own
    compute: Callable[[Seen], torch.Tensor] | None = None  # called only for the layers it `applies` to


def _saturating(layer: Layer) -> bool:
    return layer.kind == SATURATING


def _saturation(seen: Seen) -> torch.Tensor:
    return seen.layer.entry.saturated(seen.x.float(), seen.settings).float().mean()


def _zero_fraction(seen: Seen) -> torch.Tensor:
    # torch.sign(NaN) is 0, so the fast count would take a NaN entry for an exact zero. A tensor with a NaN or Inf
    # entry (the step that diverged; its mean says so) is counted the plain way. The check is a host read, free on
    # the CPU; on a GPU it would make the host wait every measuring step, so there a NaN still counts as a zero
    x = seen.x
    if x.device.type == "cpu" and not seen.mean.isfinite():
        return (x == 0).sum() / x.numel()
    return _stats().zero_fraction(x)


UPDATE_RATIO_REFERENCE = 1e-3  # Karpathy's rule of thumb for the update/weight ratio
ACT, NORM, WEIGHT = ("act",), ("norm",), ("weight",)

LAYER_METRICS = [
    # activations: every conv/linear, norm and activation output
    LayerMetric("act_std", "std of the output", "activations", column="act std", probe="act std", history=True,
                of="output", compute=lambda seen: seen.std),
    LayerMetric("act_mean", "mean of the output", "activations", roles=ACT, probe="act mean",
                of="output", compute=lambda seen: seen.mean),
    LayerMetric("act_zero", "fraction of exact zeros", "activations", roles=ACT,
                applies=lambda layer: layer.kind == RELU_LIKE, of="output", compute=_zero_fraction),
    LayerMetric("saturation", "saturated fraction", "activations", roles=ACT, applies=_saturating,
                column="saturated", probe="saturated", history=True, of="output", compute=_saturation),
    # dead units: DeadUnits, on a fixed probe batch
    LayerMetric("dead", "dead ReLU units on the probe batch", "dead units", roles=ACT,
                applies=lambda layer: layer.kind == RELU_LIKE, column="dead", probe="dead"),
    LayerMetric("dead_permanent", "ReLU units dead for good (at every probe since they died)", "dead units", roles=ACT,
                applies=lambda layer: layer.kind == RELU_LIKE),
    # gradients w.r.t. each output, and of the weights
    LayerMetric("grad_norm", "L2 norm of the gradient w.r.t. the output", "gradients", roles=("act", "weight"),
                log10=True, column="grad norm", history=True, of="output_grad", compute=lambda seen: seen.norm),
    LayerMetric("grad_std", "std of the gradient w.r.t. the output", None, probe="grad std",
                of="output_grad", compute=lambda seen: seen.std),
    LayerMetric("grad_mean", "mean of the gradient w.r.t. the output", None,
                of="output_grad", compute=lambda seen: seen.mean),
    LayerMetric("weight_grad_norm", "weight gradient norm", "gradients", roles=WEIGHT, log10=True,
                of="weight_grad", compute=lambda seen: seen.norm),
    LayerMetric("update_ratio", "update / weight ratio per step (line: 1e-3, healthy)", "gradients", roles=WEIGHT,
                log10=True, column="update/weight", run_mean=True, reference=UPDATE_RATIO_REFERENCE),
    LayerMetric("sign_agreement", "sign agreement of weight gradients (1 = zig-zag)", "gradients", roles=WEIGHT,
                column="sign agree", run_mean=True, of="weight_grad",
                compute=lambda seen: _stats().sign_agreement(seen.x)),
    # weights
    LayerMetric("weight_norm", "weight norm", "weights", roles=WEIGHT,
                of="weight", compute=lambda seen: seen.norm),
    # normalisation: BatchNorms' batch statistics against their running ones (BatchNormStats)
    LayerMetric("bn_shift", "BN batch mean vs running mean (in running stds)", "normalisation", roles=NORM,
                applies=lambda layer: layer.kind == BATCH),
    LayerMetric("bn_var_ratio", "BN batch var / running var", "normalisation", roles=NORM,
                applies=lambda layer: layer.kind == BATCH),
    LayerMetric("bin_rho", "Batch-Instance Norm rho (1 = BN, 0 = IN)", "normalisation", roles=NORM,
                applies=lambda layer: hasattr(layer.module, "rho")),
]


def computed_from(source: str) -> list[LayerMetric]:
    """The metrics the generic instruments compute from `source` ("output", "output_grad", ...)."""
    return [metric for metric in LAYER_METRICS if metric.of == source]  # read at each call: tests extend the table


def metric_of(tag: str) -> LayerMetric | None:
    """The metric a `<metric>/<layer>` tag belongs to."""
    name = tag.partition("/")[0]
    return next((metric for metric in LAYER_METRICS if metric.name == name), None)
