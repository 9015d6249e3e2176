"""What a run leaves behind, as types: the metrics.json of a `train` or `probe` run, read and written here only.

Every derived quantity (BN's train/eval gap, a metric's run mean) is defined once, on these types; findings,
the report, the sweep summary and the tests read them, not dicts by string keys.
"""

import math
import types
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_args


@dataclass
class NonFinite:
    """Where a NaN/Inf first appeared."""

    step: int
    layer: str  # a module name, or "loss" when every measured tensor was still finite
    tensor: str  # "activation", "gradient" (w.r.t. the layer's output), "weight gradient" or "loss"

    def describe(self) -> str:
        where = "the loss" if self.layer == "loss" else f"the {self.tensor} of layer {self.layer}"
        return f"first non-finite value at step {self.step}, in {where}"


@dataclass
class Evaluation:
    """One evaluation on the validation split."""

    step: int
    epoch: float
    val_loss: float
    val_acc: float
    val_acc_bn_train_mode: float | None = None  # BN normalising by each batch's statistics, as in training

    @property
    def bn_train_eval_gap(self) -> float | None:
        """Val accuracy with BN in train mode (batch statistics) minus in eval mode (running statistics):
        positive when the running statistics misrepresent what the layers see in training."""
        return None if self.val_acc_bn_train_mode is None else self.val_acc_bn_train_mode - self.val_acc


@dataclass
class Final:
    """The run's last numbers; a split that was not evaluated is None (and left out of metrics.json)."""

    train_loss: float | None = None  # mean over the last log window
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    test_loss: float | None = None  # only for a completed run
    test_acc: float | None = None
    loss: float | None = None  # probe: the loss of its one batch at initialisation


@dataclass
class LayerRecord:
    """A measured layer's last values, by metric name (diagnostics/metrics.py declares the metrics)."""

    role: str  # "weight" (conv/linear), "norm" or "act"
    kind: str  # the registry entry's kind: relu_like, saturating, batch, ...; "weight" for conv/linear
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # "error", "warning" or "info"
    message: str  # what is seen, with the evidence
    remedy: str
    layer: str | None = None
    step: int | None = None
    value: float | None = None

    def text(self) -> str:
        return f"{self.message} - {self.remedy}" if self.remedy else self.message


@dataclass
class NoiseScale:
    """The gradient noise scale at the end of a run (diagnostics/noise_scale.py): its last measurement, at the
    weights of the last step, each measurement standing alone."""

    b_simple: float  # tr(Σ) / |G|²: the batch size around which larger batches stop saving steps; NaN while
    # |G|² is not resolved from its noise (then only b_simple_low is known)
    b_simple_low: float  # B_simple is at least this (|G|² at its upper bound, 2 standard errors up)
    grad_sq: float  # |G|², the squared norm of the true gradient
    trace_cov: float  # tr(Σ), the per-example gradient covariance's trace
    batch: int  # the run's batch size
    micro_batch: int  # the size b of the micro-batches each measured batch was split into
    # (step, b_simple, b_simple_low) at each measurement
    history: list[tuple[int, float, float]] = field(default_factory=list)
    b_simple_error: float = math.nan  # standard errors, from the measurement itself (NaN: not known, older runs)
    grad_sq_error: float = math.nan
    trace_cov_error: float = math.nan
    examples: int = 0  # the examples the last measurement drew (0: not known, older runs)


@dataclass
class Curvature:
    """The loss's curvature on a fixed batch during training (diagnostics/curvature.py)."""

    # (step, lambda_max, hessian trace, stability threshold 2(1+momentum)/lr or None) at each measurement
    history: list[tuple[int, float, float, float | None]] = field(default_factory=list)

    @property
    def lambda_max(self) -> float | None:
        return self.history[-1][1] if self.history else None

    @property
    def trace(self) -> float | None:
        return self.history[-1][2] if self.history else None


@dataclass
class JacobianSpectrum:
    """`diagnose probe`: the input-output Jacobian's squared singular values per depth at initialisation, and the
    mean-field prediction of their growth (diagnostics/jacobian.py)."""

    method: str  # "exact" (singular values) or "moments" (Hutchinson estimates of their mean and std)
    sigma_w2: float  # fan_in * Var(W) of the hidden layers after the first (its fan-in is the input's): the init's
    # (depth, mean σ², std σ², max / min of the non-zero σ², share of σ² that are exactly 0, growth of an output
    # unit's mean squared gain from the depth before: measured χ) per depth; max/min and the zero share None when
    # estimated from moments, max/min also where some σ² are below J's precision, the growth None at depth 1
    depths: list[tuple[int, float, float, float | None, float | None, float | None]] = field(default_factory=list)
    chi_measured: float | None = None  # geometric mean of the growth of mean σ² per layer, depth 2 to L
    chi_predicted: float | None = None  # the same from mean-field theory (None with normalisation or maxout)
    chi_fixed_point: float | None = None  # χ₁ = σ_w² E[φ'(√q* z)²] at the length map's fixed point q*
    depth_scale: float | None = None  # ξ = 1 / |ln χ₁| (from the prediction where there is one)


@dataclass
class RunMetrics:
    status: str  # completed, diverged, interrupted; failed: a sweep job that could not start (see `error`)
    command: str = "train"  # or "probe"
    steps: int = 0
    epochs: float = 0.0
    wall_time_s: float = 0.0
    images_per_s: float = 0.0  # training images per second of training (evaluations excluded)
    lr: float | None = None  # the learning rate it trained at: `lr` scaled for the batch size (optim.lr_scaling)
    classes: int | None = None  # of the data: chance accuracy is 1 / classes
    final: Final = field(default_factory=Final)
    history: list[Evaluation] = field(default_factory=list)  # one per evaluation
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean train loss of its log window)
    threads: list[list[int]] = field(default_factory=list)  # on the CPU: [first step, threads] at each change
    noise: NoiseScale | None = None  # the gradient noise scale, where it was measured
    curvature: Curvature | None = None  # sharpness and Hessian trace, where they were measured
    jacobian: JacobianSpectrum | None = None  # probe: the input-output Jacobian's spectrum per depth
    nonfinite: NonFinite | None = None
    layers: dict[str, LayerRecord] = field(default_factory=dict)  # in forward order
    dead_history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # layer -> (step, dead share)
    # metric -> layer -> (step, value) at every measuring step, for the metrics whose history the findings read
    # (diagnostics/metrics.py: `history`): an early failure that training later hides is a finding too
    layer_history: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    run_means: dict[str, float] = field(default_factory=dict)  # tag -> mean over every measuring step
    symmetric_layers: list[str] = field(default_factory=list)  # every unit with the same weights: never breaks
    config: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # why a failed run failed
    error_kind: str | None = None  # "user": a mistake the message says how to fix; "internal": a bug

    def value(self, metric: str, layer: str) -> float | None:
        """The last measured `metric` of `layer`, None where it was not measured."""
        record = self.layers.get(layer)
        return None if record is None else record.values.get(metric)

    def over_layers(self, metric: str, role: str | None = None) -> list[tuple[str, float]]:
        """(layer, last value) of every layer (of `role`) that has `metric`, in forward order."""
        return [(name, record.values[metric]) for name, record in self.layers.items()
                if metric in record.values and role in (None, record.role)]

    def over_steps(self, metric: str, role: str | None = None) -> list[tuple[int, list[tuple[str, float]]]]:
        """(step, [(layer, value) in forward order]) at each step that measured `metric` on the layers (of `role`),
        over the whole run; the last values alone where no history was kept (an older metrics.json)."""
        history = self.layer_history.get(metric)
        if not history:
            last = self.over_layers(metric, role)
            return [(self.steps, last)] if last else []
        order = {name: i for i, name in enumerate(self.layers)}  # forward order (gradients arrive backwards)
        names = sorted((name for name in history if role in (None, self.layers.get(name, LayerRecord(role, "")).role)),
                       key=lambda name: order.get(name, len(order)))
        at: dict[int, list[tuple[str, float]]] = {}
        for name in names:
            for step, value in history[name]:
                at.setdefault(step, []).append((name, value))
        return sorted(at.items())

    def over_run(self, metric: str) -> dict[str, float]:
        """{layer: value} of `metric`: its mean over the run where it is kept (a single step's value is noisy, and a
        schedule that ends at lr 0 makes the last update ratio tiny by design), else the last measurement."""
        prefix = f"{metric}/"
        means = {tag[len(prefix):]: v for tag, v in self.run_means.items() if tag.startswith(prefix)}
        return means or dict(self.over_layers(metric))

    @property
    def last_evaluation(self) -> Evaluation | None:
        return self.history[-1] if self.history else None

    @property
    def bn_train_eval_gap(self) -> float | None:
        """BN's train/eval gap at the last evaluation (Evaluation.bn_train_eval_gap)."""
        return None if self.last_evaluation is None else self.last_evaluation.bn_train_eval_gap

    def to_json(self) -> dict[str, Any]:
        """The metrics.json object, strict JSON: a value that is not finite (a diverged run's loss) is null, and
        `non_finite` maps its JSON Pointer (RFC 6901, e.g. "/final/train_loss") to "nan", "inf" or "-inf"."""
        data = asdict(self)
        data["final"] = {key: value for key, value in data["final"].items() if value is not None}
        data["history"] = [{k: v for k, v in entry.items() if v is not None} for entry in data["history"]]
        data["layers"] = {name: {"role": record["role"], "kind": record["kind"], **record["values"]}
                          for name, record in data["layers"].items()}
        non_finite: dict[str, str] = {}
        data = _finite(data, "", non_finite)
        data["non_finite"] = non_finite
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunMetrics":
        """Read a metrics.json object, also one written before a key existed (it takes its default)."""
        data = _restore(data)
        known = {f.name for f in fields(cls)}
        values = _typed(cls, {"status": "unknown", **{key: value for key, value in data.items() if key in known}})
        values["final"] = Final(**_typed(Final, {k: v for k, v in (data.get("final") or {}).items()
                                                 if k in Final.__dataclass_fields__}, "final."))
        values["history"] = [Evaluation(**_typed(Evaluation, {k: v for k, v in entry.items()
                                                              if k in Evaluation.__dataclass_fields__}, "history."))
                             for entry in data.get("history") or []]
        values["nonfinite"] = NonFinite(**_typed(NonFinite, data["nonfinite"], "nonfinite.")) \
            if data.get("nonfinite") else None
        values["train_curve"] = [tuple(point) for point in data.get("train_curve") or []]
        if data.get("noise"):
            noise = data["noise"]
            history = [(*point, math.nan, math.nan)[:3] for point in noise.get("history") or []]  # older: no bound
            values["noise"] = NoiseScale(**{"b_simple_low": math.nan, **noise, "history": history})
        values["layers"] = {name: _layer_record(name, entry) for name, entry in (data.get("layers") or {}).items()}
        if data.get("jacobian"):
            spectrum = data["jacobian"]
            values["jacobian"] = JacobianSpectrum(**{**spectrum, "depths": [tuple(d) for d in spectrum["depths"]]})
        if data.get("curvature"):
            values["curvature"] = Curvature([tuple(point) for point in data["curvature"].get("history") or []])
        values["dead_history"] = {name: [tuple(point) for point in points]
                                  for name, points in (data.get("dead_history") or {}).items()}
        values["layer_history"] = {metric: {name: [tuple(point) for point in points] for name, points in by.items()}
                                   for metric, by in (data.get("layer_history") or {}).items()}
        values["findings"] = [Finding(**f) for f in data.get("findings") or []]
        return cls(**values)


_SCALARS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,)}  # a field's type -> JSON's


def _typed(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`values`, once each number or text is of the type `cls`'s field declares: a metrics.json edited by hand or by
    another tool (`"final": {"val_acc": "0.9"}`) is refused as it is read, not where a table formats the value."""
    for f in fields(cls):
        options = get_args(f.type) if isinstance(f.type, types.UnionType) else (f.type,)  # float | None: either
        kinds = [kind for kind in options if kind in _SCALARS]
        value = values.get(f.name)
        if not kinds or f.name not in values or (value is None and type(None) in options):
            continue
        if isinstance(value, bool) or not isinstance(value, tuple(t for kind in kinds for t in _SCALARS[kind])):
            raise TypeError(f"{where}{f.name} is {value!r}, not {'text' if kinds == [str] else 'a number'}")
    return values


def _finite(value: Any, pointer: str, found: dict[str, str]) -> Any:
    """`value` with every non-finite float replaced by None, noting each in `found` by its JSON Pointer."""
    if isinstance(value, float) and not math.isfinite(value):
        found[pointer] = "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{pointer}/{_escape(str(k))}", found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{pointer}/{i}", found) for i, v in enumerate(value)]
    return value


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _restore(data: dict[str, Any]) -> dict[str, Any]:
    """A metrics.json object with the non-finite values its `non_finite` lists put back."""
    for pointer, text in (data.get("non_finite") or {}).items():
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part, {})
        if isinstance(node, list):
            node[int(last)] = float(text)
        elif isinstance(node, dict):
            node[last] = float(text)
    return data


def _layer_record(name: str, entry: dict[str, Any]) -> LayerRecord:
    entry = dict(entry)
    # written before roles were stored: the blocks' naming (models/blocks.py) says what a layer is
    role = entry.pop("role", "act" if name.endswith(".act") else "norm" if name.endswith(".norm") else "weight")
    kind = entry.pop("kind", role)
    return LayerRecord(role, kind, {k: float(v) for k, v in entry.items() if isinstance(v, int | float)})
