"""The one seam between a run and what measures it: the loop calls a Monitor at a few named moments, and the
Monitor calls each of its instruments there.

An instrument is a class with the moments it needs (see `Instrument`); adding one is a new class in the list
`instruments.for_training` builds, never an edit to the loop: a `Watch` (watch.py) calls the moments from hooks on
the model and its optimizer, for `diagnose train` and a plain PyTorch loop alike. Instruments put what they measure,
as 0-d device tensors, into the step's `Readings`; the Monitor reads them all back with one host transfer per
measuring step, writes them as one TensorBoard event, keeps the last value of every tag (metrics.json's per-layer
records and the findings read those) and the run means the metric table asks for.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diagnose.diagnostics import stats
from diagnose.diagnostics.layers import Layer, depth_labels
from diagnose.diagnostics.metrics import metric_of
from diagnose.diagnostics.writing import to_host, write_histograms, write_scalars
from diagnose.results import Evaluation, LayerRecord, NonFinite, RunMetrics


@dataclass
class Readings:
    """What the instruments measured on one step: device tensors (or floats), read back together."""

    scalars: dict[str, torch.Tensor | float] = field(default_factory=dict)
    histograms: dict[str, torch.Tensor] = field(default_factory=dict)  # tag -> a sample of the tensor
    # (layer, what, value): the value is NaN/Inf exactly when the tensor has a NaN/Inf entry
    finite: list[tuple[str, str, torch.Tensor]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.scalars or self.histograms or self.finite)


class Instrument:
    """One measurement attached to a run from outside. Every moment does nothing unless a subclass says otherwise;
    `readings` is the step's shared buffer."""

    @property
    def name(self) -> str:
        """The key of its state in a checkpoint."""
        return type(self).__name__

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        """Before the forward pass of `step` (counted from 1) on the inputs `x`."""

    def after_backward(self, step: int, readings: Readings) -> None:
        """Gradients exist, the weights are still the old ones."""

    def after_step(self, step: int, readings: Readings) -> None:
        """The optimizer has stepped."""

    def on_evaluation(self, evaluation: Evaluation, readings: Readings) -> None:
        """After each validation pass; an instrument may add to `evaluation`."""

    def read_back(self, step: int, values: dict[str, float]) -> None:
        """The step's scalars, as host numbers, once written: for instruments that keep a history."""

    def finish(self, metrics: RunMetrics) -> None:
        """Add what the instrument knows to the run's metrics."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Remove whatever it attached (a run may end in the middle of a measuring step)."""


HISTORY_POINTS = 256  # a series' history keeps at most twice this many points: every other one goes when it is full


def _keep(points: list[tuple[int, float]], point: tuple[int, float]) -> None:
    """Append `point`, thinning a long series to every other point (initialisation, the first, stays): a run that
    measures every step keeps its history at a bounded size."""
    points.append(point)
    if len(points) > 2 * HISTORY_POINTS:
        points[:] = points[::2]


class Monitor:
    """Calls its instruments, in their order, at each moment, and writes what they read."""

    def __init__(self, layers: list[Layer], instruments: list[Instrument], writer: Any = None,
                 learning: Callable[[], bool] | None = None):
        self.layers, self.instruments, self.writer = layers, instruments, writer  # writer None: keep, write nothing
        self.labels = depth_labels(layers)
        # run means describe the run while it learns: at lr ~ 0 (a schedule's end) an update ratio is ~0 by design.
        # A step's values join them once the lr has moved on to the next step's (at the next step, or at the end):
        # the same moment whether a loop steps its schedule before or after the optimizer's post-hooks run
        self.learning = learning or (lambda: True)
        self._pending: dict[str, float] = {}  # the last measuring step's values that keep a run mean
        names = [instrument.name for instrument in instruments]
        assert len(set(names)) == len(names), f"two instruments would share a checkpoint key: {names}"
        self.readings = Readings()
        self.latest: dict[str, float] = {}  # tag -> the last value written
        self._sums: dict[str, tuple[float, int]] = {}  # tag -> (sum, count) of the metrics that keep a run mean
        self._history: dict[str, list[tuple[int, float]]] = {}  # tag -> (step, value), the metrics that keep one

    def before_step(self, step: int, x: torch.Tensor) -> None:
        self._settle()
        for instrument in self.instruments:
            instrument.before_step(step, x, self.readings)

    def after_backward(self, step: int) -> None:
        for instrument in self.instruments:
            instrument.after_backward(step, self.readings)

    def after_step(self, step: int) -> NonFinite | None:
        """Measure what is due after the update, write the step's readings; the first non-finite value, if any."""
        for instrument in self.instruments:
            instrument.after_step(step, self.readings)
        return self._flush(step)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        for instrument in self.instruments:
            instrument.on_evaluation(evaluation, self.readings)
        self._flush(evaluation.step)

    def _flush(self, step: int) -> NonFinite | None:
        readings, self.readings = self.readings, Readings()
        if not readings:
            return None
        # the one host transfer of the step's scalars and checks (a second one for histograms, on the steps that
        # draw them)
        *host, = to_host([*readings.scalars.values(), *(flag for _, _, flag in readings.finite)])
        measured, flags = dict(zip(readings.scalars, host, strict=False)), host[len(readings.scalars):]
        if self.writer is not None:
            write_scalars(self.writer, self._shown(measured), step)
            if readings.histograms:
                rows = stats.histograms(list(readings.histograms.values())).cpu()
                write_histograms(self.writer, {self._label(tag): row for tag, row in zip(readings.histograms, rows,
                                                                                           strict=True)}, step)
            self._pending.update({tag: value for tag, value in measured.items()
                                  if (metric := metric_of(tag)) is not None and metric.run_mean})
        self.latest.update(measured)
        for tag, value in measured.items():
            if (metric := metric_of(tag)) is not None and metric.history:
                _keep(self._history.setdefault(tag, []), (step, value))
        for instrument in self.instruments:
            instrument.read_back(step, measured)
        bad = next(((layer, what) for (layer, what, _), value in zip(readings.finite, flags, strict=True)
                    if not math.isfinite(value)), None)
        return NonFinite(step, *bad) if bad else None

    def _settle(self) -> None:
        """Add the pending values to the run means, where the run was learning."""
        for tag, value in self._pending.items() if self.learning() else ():
            total, count = self._sums.get(tag, (0.0, 0))
            self._sums[tag] = (total + value, count + 1)
        self._pending = {}

    def _label(self, tag: str) -> str:
        """`metric/layer` as TensorBoard shows it: the layer by its depth label (layers.depth_labels)."""
        kind, _, name = tag.partition("/")
        return f"{kind}/{self.labels[name]}" if name in self.labels else tag

    def _shown(self, measured: dict[str, float]) -> dict[str, float]:
        """The values as TensorBoard gets them: by depth label, the metrics that span decades also as log10, and
        the healthy value of each metric that has one, drawn as a line on its chart."""
        shown = {self._label(tag): value for tag, value in measured.items()}
        for tag, value in measured.items():
            metric = metric_of(tag)
            if metric is None:
                continue
            if metric.log10 and math.isfinite(value) and value > 0:
                shown[self._label(f"{metric.name}_log10/{tag.partition('/')[2]}")] = math.log10(value)
            if metric.reference:
                shown[f"reference/{metric.name}"] = metric.reference
                if metric.log10:
                    shown[f"reference/{metric.name}_log10"] = math.log10(metric.reference)
        return shown

    def finish(self, metrics: RunMetrics) -> None:
        """The run's per-layer records, run means, and what each instrument adds."""
        self._settle()
        for layer in self.layers:
            prefix_values = {tag.partition("/")[0]: value for tag, value in self.latest.items()
                             if tag.partition("/")[2] == layer.name and metric_of(tag) is not None}
            if prefix_values:
                metrics.layers[layer.name] = LayerRecord(layer.role, layer.kind, prefix_values)
        metrics.run_means = {tag: total / count for tag, (total, count) in self._sums.items()}
        for tag, points in self._history.items():
            metric, _, layer = tag.partition("/")
            metrics.layer_history.setdefault(metric, {})[layer] = list(points)
        for instrument in self.instruments:
            instrument.finish(metrics)

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on measuring as if it had never stopped."""
        return {"sums": dict(self._sums), "pending": dict(self._pending), "latest": dict(self.latest),
                "history": dict(self._history),
                **{instrument.name: instrument.state() for instrument in self.instruments}}

    def load_state(self, state: dict[str, Any]) -> None:
        self._sums = {tag: tuple(pair) for tag, pair in state.get("sums", {}).items()}
        self._pending = dict(state.get("pending", {}))
        self.latest = dict(state.get("latest", {}))
        self._history = {tag: [tuple(point) for point in points] for tag, points in state.get("history", {}).items()}
        for instrument in self.instruments:
            instrument.load_state(state.get(instrument.name, state))  # a checkpoint from before: flat

    def close(self) -> None:
        for instrument in self.instruments:
            instrument.close()
        self.readings = Readings()

