"""Rules that turn statistics into plain-language findings: what is wrong, the evidence, the remedy.

Every rule reads what a run stores (RunMetrics: metrics.json, or a sweep's runs): nothing but the stored numbers, over
the run's whole history where it is kept, so that an early failure that training later hides is a finding too, with
its steps. A finding says only what was measured; one cause gives one finding that carries all its evidence (a signal
that vanishes forward, its gradient that vanishes backward and the Jacobian's χ₁ below 1 are one finding); a remedy
is a setting the tool accepts for this run, never one it already uses, and never training advice to a probe. Findings
come ordered by severity (error: the run failed or cannot learn; warning; info), and end with the checks that had
data and passed and those that were not measured, with why.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from diagnose.components.activations import ACTIVATIONS
from diagnose.components.norms import NORMS, GroupNormOptions
from diagnose.components.targets import TARGET
from diagnose.config import Thresholds
from diagnose.diagnostics.metrics import ROLES
from diagnose.kinds import BATCH, RELU_LIKE, SATURATING
from diagnose.results import Finding, RunMetrics

SEVERITIES = ("error", "warning", "info")


def _times(ratio: float) -> str:
    return f"{ratio:.0e}x" if ratio >= 1000 else f"{ratio:.0f}x"


def about(value: float) -> str:
    """A measured magnitude to two significant digits, as a reader says it: 22,844 -> '23,000', 0.0123 -> '0.012'."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    rounded = round(value, 1 - math.floor(math.log10(abs(value))))
    return f"{rounded:,.0f}" if abs(rounded) >= 100 else f"{rounded:.2g}"


def _setting(m: RunMetrics, key: str) -> Any:
    """A dotted setting of the run's config (a group's option name for a group), None where it has none."""
    node: Any = m.config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node.get("name") if isinstance(node, dict) else node


def _your_model(m: RunMetrics) -> bool:
    """Whether the run's network is the user's own (`model._target_`): the tool's act, norm and init keys do not build
    it, so its remedies are said in terms of the model's code."""
    return _setting(m, "model") == TARGET


# what a remedy on a component key means for the user's own network (a `model._target_` run)
IN_YOUR_MODEL = {"act": "another activation in your model (e.g. nn.LeakyReLU)",
                 "init": "the init of your model's layers (e.g. nn.init.kaiming_normal_ for ReLU-like ones)",
                 "norm": "a per-example norm in your model (nn.GroupNorm or nn.LayerNorm)"}


def _has_kind(m: RunMetrics, kind: str) -> bool:
    """Whether the run has a layer of `kind`: the activation's entry says for the tool's models, the layers found
    in the user's network say for theirs."""
    return (not _your_model(m) and _activation(m).kind == kind) or any(r.kind == kind for r in m.layers.values())


def _has_norm_kind(m: RunMetrics, kind: str) -> bool:
    return (not _your_model(m) and _norm(m).kind == kind) or any(
        r.kind == kind for r in m.layers.values() if r.role == "norm")


def _activation(m: RunMetrics) -> Any:
    """The registry entry of the run's activation (relu's for a run that does not say)."""
    return ACTIVATIONS.get(_setting(m, "act"), ACTIVATIONS["relu"])


def _norm(m: RunMetrics) -> Any:
    """The registry entry of the run's normalisation (none's for a run that does not say)."""
    return NORMS.get(_setting(m, "norm"), NORMS["none"])


@dataclass(frozen=True)
class Remedy:
    """One thing to change: left out where the run has `key` as `wanted` already, or, for `training` advice (the
    lr, clipping, the batch), where the run is a probe, which does not train."""

    text: str
    key: str | None = None
    wanted: str | Callable[[Any], bool] | None = None
    training: bool = False

    def fits(self, m: RunMetrics) -> bool:
        if self.training and m.command != "train":
            return False
        if self.key is None or (self.key in IN_YOUR_MODEL and _your_model(m)):  # the model's own code is unknown
            return True
        value = _setting(m, self.key)
        return not (self.wanted(value) if callable(self.wanted) else value == self.wanted)


def _advice(m: RunMetrics, *remedies: Remedy) -> str:
    """The remedies that fit the run, in order, as one phrase."""
    said = (lambda r: IN_YOUR_MODEL.get(r.key, r.text)) if _your_model(m) else (lambda r: r.text)
    kept = list(dict.fromkeys(said(r) for r in remedies if r.fits(m)))
    if len(kept) > 2:
        return ", ".join(kept[:-1]) + f", or {kept[-1]}"
    return " or ".join(kept)


def _any_norm(name: Any) -> bool:
    return name not in (None, "none")


def _widths(m: RunMetrics) -> list[int]:
    model = m.config.get("model") or {}
    widths = model.get("widths") or ([model["width"]] if "width" in model else [])
    return [w for w in widths if isinstance(w, int)]


def _batch_free_norm(m: RunMetrics) -> str:
    """`norm=gn` where its default groups divide every width (the tool refuses it elsewhere), else `norm=ln`."""
    groups = GroupNormOptions.groups
    return "norm=gn" if _widths(m) and all(w % groups == 0 for w in _widths(m)) else "norm=ln"


def _normalise(m: RunMetrics) -> Remedy:
    return Remedy(f"normalisation ({_batch_free_norm(m)})", "norm", _any_norm)


def _init_remedies(m: RunMetrics, smaller: bool) -> list[Remedy]:
    """The activation's own init, and the scale key of an init that has one (normal: std, uniform: a)."""
    init = _activation(m).init
    scale = {"normal": "init.std", "uniform": "init.a"}.get(_setting(m, "init"))
    found = [Remedy(f"init={init}", "init", init)]
    if scale:
        found.append(Remedy(f"a {'smaller' if smaller else 'larger'} {scale}"))
    return found


def _span(values: list[float]) -> str:
    """'89-95%', or '61%' when they round alike."""
    low, high = f"{min(values) * 100:.0f}", f"{max(values) * 100:.0f}"
    return f"{low}%" if low == high else f"{low}-{high}%"


def _layers(names: list[str], of: int, kind: str) -> str:
    """'3 of 3 ReLU layers (features.0.act, features.2.act, features.4.act)', the list cut short when long."""
    shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]}"
    return f"{len(names)} of {of} {kind} layers ({shown})"


def _at(m: RunMetrics, step: int) -> str:
    """'at initialisation' for a probe or a run's first step, else 'at step N'."""
    return "at initialisation" if m.command == "probe" or step <= 1 else f"at step {step}"


def _first_step(m: RunMetrics, metric: str) -> int | None:
    steps = m.over_steps(metric)
    return steps[0][0] if steps else None


# --- why a rule had nothing to judge ---------------------------------------------------------------------------------

def _no_training(m: RunMetrics) -> str | None:
    return "no step was trained" if m.command == "train" and m.steps == 0 else None


def _statistics_off(m: RunMetrics) -> str | None:
    """Why the per-layer statistics are missing from a training run."""
    if (why := _no_training(m)) is not None:
        return why
    if m.command == "train" and _setting(m, "diag.every") == 0:
        return "off: diag.every=0"
    return "not measured"


def _needs(metric: str, role: str | None = None, layers: int = 1) -> Callable[[RunMetrics], str | None]:
    """Nothing is missing where `metric` was measured on `layers` layers (of `role`), else why it is not."""

    def missing(m: RunMetrics) -> str | None:
        found = len(m.over_layers(metric, role))
        if found >= layers:
            return None
        return f"{found} layer{'' if found == 1 else 's'} measured, {layers} needed" if found else _statistics_off(m)

    return missing


# --- the rules -----------------------------------------------------------------------------------------------------

def divergence(m: RunMetrics, t: Thresholds) -> list[Finding]:
    found = m.nonfinite
    if found is None:
        return []
    if _overflow_at_init(m):  # no update has happened yet: the initial weights overflow
        what = "the signal overflows to NaN/Inf at initialisation" if m.command == "probe" else \
            "training diverged at its first step, before any update"
        growth = [p.text for p in _depth_pieces(m, t) if p.way == "exploding"]  # how it got there: one cause
        return [Finding("divergence", "error", f"{what}: the {found.describe()}" + "".join(f"; {g}" for g in growth),
                        "the initial weights are too large for the depth: "
                        + _advice(m, *_init_remedies(m, smaller=True), _normalise(m)), found.layer, found.step)]
    return [Finding("divergence", "error", f"training diverged: the {found.describe()}",
                    _advice(m, Remedy("lower the learning rate", training=True),
                            Remedy("clip gradients (clip=norm)", "clip", "norm", training=True), _normalise(m)),
                    found.layer, found.step)]


def _overflow_at_init(m: RunMetrics) -> bool:
    return m.nonfinite is not None and (m.command == "probe" or m.nonfinite.step == 1)


def _growth_in_divergence(m: RunMetrics, t: Thresholds) -> bool:
    """An exploding signal that overflowed at initialisation is the divergence finding's evidence."""
    return _overflow_at_init(m) and any(p.way == "exploding" for p in _depth_pieces(m, t))


def _dead_by_symmetry(m: RunMetrics, t: Thresholds) -> bool:
    """ReLUs dead from initialisation in a net whose layers are symmetric: zero weights give every unit 0 (one
    cause, the zero init)."""
    return bool(m.symmetric_layers) and any(f.step is not None and f.step <= 1 for f in dead_relus(m, t, alone=True))


def symmetry(m: RunMetrics, t: Thresholds) -> list[Finding]:
    if not m.symmetric_layers:
        return []
    names = m.symmetric_layers
    weights = len([r for r in m.layers.values() if r.role == "weight"]) or len(names)
    dead = [f.message.split(":")[0] for f in dead_relus(m, t, alone=True)] if _dead_by_symmetry(m, t) else []
    return [Finding("zero_init_symmetry", "error", f"all units have identical weights and get identical gradients in "
                    f"{_layers(names, weights, 'weight')} - the symmetry never breaks, each layer acts as one unit"
                    + "".join(f"; {d}" for d in dead),
                    _advice(m, Remedy(f"a random init (init={_activation(m).init})", "init",
                                      _activation(m).init)) + ", not zeros", names[0])]


def did_not_learn(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """A completed run that ends at chance accuracy (run_findings points at the other findings, which say why)."""
    split, acc = ("val", m.final.val_acc) if m.final.val_acc is not None else ("test", m.final.test_acc)
    if m.command != "train" or m.status != "completed" or acc is None or not m.classes:
        return []
    chance = 1 / m.classes
    if acc > chance + t.chance_margin:
        return []
    return [Finding("did_not_learn", "error", f"the network did not learn: {split} accuracy {acc:.3f} is chance for "
                    f"{m.classes} classes ({chance:.3f}) after {m.steps} steps",
                    "`diagnose check` with the same settings tests the loss at initialisation, overfitting one batch "
                    "and the learning rate", None, m.steps, acc)]


def _accuracy_missing(m: RunMetrics) -> str | None:
    if (why := _no_training(m)) is not None:
        return why
    if m.status != "completed":
        return f"the run {m.status} before its final accuracy"
    if m.final.val_acc is None and m.final.test_acc is None:
        return "no val or test accuracy"
    return None


def _streak_start(points: list[tuple[int, float]], threshold: float) -> int | None:
    """The step from which the share has stayed at or above `threshold` to the last point, None if it ends below."""
    start = None
    for step, share in reversed(points):
        if share < threshold:
            break
        start = step
    return start


def dead_relus(m: RunMetrics, t: Thresholds, alone: bool = False) -> list[Finding]:
    """ReLU layers dead beyond the threshold at the last probe (a warning, with the step since which they have
    been), or only earlier, recovered since (info: the units came back, but for a while no gradient reached them).
    Where a zero init killed them, the symmetry finding says it (`alone`: as if it did not)."""
    relus = [(name, v) for name, r in m.layers.items() if r.role == "act" and (v := r.values.get("dead")) is not None]
    if not relus or (not alone and _dead_by_symmetry(m, t)):
        return []
    history = {name: m.dead_history.get(name) or [(m.steps, value)] for name, value in relus}
    dead = [(name, value) for name, value in relus if value >= t.dead]
    act = _activation(m)
    remedy = _advice(m, Remedy("lower the learning rate", training=True),
                     Remedy(f"act={act.instead}", "act", act.instead), Remedy(f"init={act.init}", "init", act.init))
    if dead:
        starts = [s for name, _ in dead if (s := _streak_start(history[name], t.dead)) is not None]
        since, latest = min(starts), max(starts)
        born = since <= (min(points[0][0] for points in history.values()))  # dead since the first probe
        when = "at initialisation" if m.command == "probe" else \
            ("from initialisation" if born else f"from step {since}") + " to the last probe" + \
            (f" (in some layers from step {latest})" if latest != since else "")
        # a net dead from its initialisation on did not get there by its learning rate
        remedy = _advice(m, *([] if born else [Remedy("lower the learning rate", training=True)]),
                         Remedy(f"act={act.instead}", "act", act.instead), Remedy(f"init={act.init}", "init", act.init))
        return [Finding("dead_relu", "warning", f"{_span([v for _, v in dead])} dead ReLU units in "
                        f"{_layers([n for n, _ in dead], len(relus), 'ReLU')} {when}: no gradient reaches them",
                        remedy, dead[0][0], since, max(v for _, v in dead))]
    peaks = [(name, *max(points, key=lambda p: p[1])) for name, points in history.items()]
    once = [(name, step, share) for name, step, share in peaks if share >= t.dead]
    if not once:
        return []
    step = min(s for _, s, _ in once)
    now = [value for name, value in relus if name in {n for n, _, _ in once}]
    return [Finding("dead_relu", "info", f"up to {_span([s for _, _, s in once])} dead ReLU units in "
                    f"{_layers([n for n, _, _ in once], len(relus), 'ReLU')} from step {step}, down to "
                    f"{_span(now)} at the last probe: most came back, but for a while no gradient reached them",
                    remedy, once[0][0], step, max(s for _, _, s in once))]


def _dead_missing(m: RunMetrics) -> str | None:
    if any("dead" in r.values for r in m.layers.values()):
        return None
    if (why := _no_training(m)) is not None:
        return why
    if m.command == "train" and _setting(m, "diag.probe_every") == 0:
        return "off: diag.probe_every=0"
    if m.command == "train" and _setting(m, "data.val_size") == 0:
        return "no held-out examples to probe: data.val_size=0"
    return "not measured"


def _saturated(m: RunMetrics, t: Thresholds) -> tuple[int, list[tuple[str, float]], int] | None:
    """(step, the saturated layers with their shares, how many layers were measured) at the step where the most
    layers were saturated beyond the threshold (the first such step on a tie), None if none ever was."""
    best = None
    for step, values in m.over_steps("saturation"):
        flat = [(name, v) for name, v in values if v >= t.saturation]
        if flat and (best is None or len(flat) > len(best[1])):
            best = (step, flat, len(values))
    return best


def _saturation_text(m: RunMetrics, seen: tuple[int, list[tuple[str, float]], int]) -> str:
    step, flat, count = seen
    kind = "saturating" if _your_model(m) else _setting(m, "act") or "saturating"
    said = (f"{_span([v for _, v in flat])} of outputs saturated (in the flat tails) in "
            f"{_layers([n for n, _ in flat], count, kind)} {_at(m, step)}")
    steps = m.over_steps("saturation")
    if len(steps) < 2 or steps[-1][0] == step:
        return said
    names = {name for name, _ in flat}
    last = [v for name, v in steps[-1][1] if name in names]
    return said + f" ({_span(last)} at the last measurement, step {steps[-1][0]})"


def saturation(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """Saturated layers, where no depth finding carries them as its evidence (one cause, one finding)."""
    seen = _saturated(m, t)
    if seen is None or _saturation_in_depth(m, t):
        return []
    step, flat, _ = seen
    act = _activation(m)
    early = step <= (_first_step(m, "saturation") or 1)
    return [Finding("saturation", "warning", _saturation_text(m, seen),
                    _advice(m, *([Remedy(f"smaller initial weights (init={act.init})", "init", act.init)] if early
                                 else [Remedy("lower the learning rate", training=True)]),
                            _normalise(m), Remedy(f"act={act.instead}", "act", act.instead)),
                    flat[0][0], step, max(v for _, v in flat))]


def _saturation_in_depth(m: RunMetrics, t: Thresholds) -> bool:
    """Saturation is evidence of a vanishing or exploding signal's finding (one cause, one finding)."""
    return _saturated(m, t) is not None and bool(_depth_pieces(m, t))


@dataclass(frozen=True)
class _Piece:
    """One measurement of how a signal changes over depth: which way, how much, where, and said how."""

    way: str  # "vanishing" or "exploding"
    text: str
    step: int | None
    value: float  # the change over depth (or per layer, for χ₁): < 1 vanishing, > 1 exploding
    layer: str | None = None
    across: str | None = None  # the role of the layers most of a gradient's change happens across


def _worst(m: RunMetrics, metric: str, ratio: Callable[[list[tuple[str, float]]], float | None],
           t: Thresholds) -> list[tuple[int, float, list[tuple[str, float]]]]:
    """For each way (down, up) a ratio over depth went beyond the threshold, the measuring step where it went
    furthest: [(step, ratio, the layers' values)]."""
    worst: dict[bool, tuple[int, float, list[tuple[str, float]]]] = {}
    for step, values in m.over_steps(metric, role="act"):
        r = ratio(values)
        if r is None or 1 / t.depth_ratio <= r <= t.depth_ratio:
            continue
        up = r > 1
        if up not in worst or _magnitude(r) > _magnitude(worst[up][1]):
            worst[up] = (step, r, values)
    return list(worst.values())


def _magnitude(ratio: float) -> float:
    return math.inf if math.isinf(ratio) else abs(math.log(ratio))


def _activation_ratio(values: list[tuple[str, float]]) -> float | None:
    if len(values) < 2 or values[0][1] <= 0 or not math.isfinite(values[0][1]):
        return None
    if any(not math.isfinite(v) for _, v in values):
        return math.inf
    return max(values[-1][1] / values[0][1], 1e-300)  # a signal that vanished to exactly 0 is still "vanishing"


def _gradient_ratio(values: list[tuple[str, float]]) -> float | None:
    """The first layer's output gradient relative to the last one's (finite values only)."""
    finite = [(name, v) for name, v in values if math.isfinite(v)]
    if len(finite) < 2 or finite[-1][1] <= 0:
        return None
    return max(finite[0][1] / finite[-1][1], 1e-300)


def _across(m: RunMetrics, step: int) -> tuple[str, list[str], float] | None:
    """The role of layer (conv/linear, norm, act) that most of the gradient's change over depth happens across at
    `step`, going backwards: (role, its layers, the change across them), where that role carries more than half of
    it. Across layer i the gradient goes from layer i's output to layer i-1's."""
    at = next((values for s, values in m.over_steps("grad_norm") if s == step), [])
    logs: dict[str, list[tuple[str, float]]] = {}
    for (_, before), (name, after) in zip(at, at[1:], strict=False):
        if before > 0 and after > 0 and math.isfinite(before) and math.isfinite(after) and name in m.layers:
            logs.setdefault(m.layers[name].role, []).append((name, math.log(before / after)))
    total = sum(v for changes in logs.values() for _, v in changes)  # the same pairs: the change over them all
    if total == 0:
        return None
    role, changes = max(logs.items(), key=lambda item: sum(v for _, v in item[1]) / total, default=(None, []))
    share = sum(v for _, v in changes)
    if role is None or share / total <= 0.5:
        return None
    names = [name for name, _ in changes]
    shown = names if len(names) <= 3 else [names[0], "...", names[-1]]
    return role, shown, math.exp(abs(share))


def _then(m: RunMetrics, metric: str, ratio: Callable[[list[tuple[str, float]]], float | None], step: int) -> str:
    """How the ratio stood at the last measurement, where that is later than `step`."""
    steps = m.over_steps(metric, role="act")
    if not steps or steps[-1][0] == step or (last := ratio(steps[-1][1])) is None or math.isinf(last):
        return ""
    return f" (at the last measurement, step {steps[-1][0]}: {'grows' if last >= 1 else 'falls'} " \
           f"{_times(last if last >= 1 else 1 / last)})"


def _depth_pieces(m: RunMetrics, t: Thresholds) -> list[_Piece]:
    """Every measurement of a signal vanishing or exploding over depth: the activations forward, the gradients
    backward (each at its worst step), and the Jacobian's growth per layer χ₁ in a probe."""
    pieces = []
    for step, r, values in _worst(m, "act_std", _activation_ratio, t):
        span = f"over {len(values)} layers ({values[0][0]} to {values[-1][0]}) {_at(m, step)}"
        if math.isinf(r):
            layer = next(name for name, v in values if not math.isfinite(v))
            pieces.append(_Piece("exploding", f"activation std grows past what float32 holds (inf/nan) by {layer} "
                                 f"{_at(m, step)}",
                                 step, r, layer))
            continue
        way = "vanishing" if r < 1 else "exploding"
        pieces.append(_Piece(way, f"activation std {'falls' if r < 1 else 'grows'} {_times(r if r > 1 else 1 / r)} "
                                  f"{span}{_then(m, 'act_std', _activation_ratio, step)}", step, r, values[-1][0]))
    for step, r, values in _worst(m, "grad_norm", _gradient_ratio, t):
        way = "vanishing" if r < 1 else "exploding"
        across = _across(m, step)
        said = f", changing {_times(across[2])} across the {ROLES[across[0]]} ({', '.join(across[1])})" \
            if across else ""
        pieces.append(_Piece(way, f"the gradient w.r.t. the layers' outputs {'falls' if r < 1 else 'grows'} "
                                  f"{_times(r if r > 1 else 1 / r)} from {values[-1][0]} back to {values[0][0]} "
                                  f"{_at(m, step)}{said}{_then(m, 'grad_norm', _gradient_ratio, step)}", step, r,
                             values[0][0], across[0] if across else None))
    if (chi := _jacobian_chi(m)) is not None:
        chi_value, depth, said = chi
        if _beyond_depth_scale(chi_value, depth):
            way = "vanishing" if chi_value < 1 else "exploding"
            phase = "the ordered phase: inputs collapse together" if chi_value < 1 else \
                "the chaotic phase: nearby inputs are torn apart"
            pieces.append(_Piece(way, f"the input-output Jacobian's squared singular values "
                                      f"{'shrink' if chi_value < 1 else 'grow'} {chi_value:.2f}x per layer ({said}; "
                                      f"{phase}): beyond ~6ξ ≈ {_layer_count(6 / abs(math.log(chi_value)))} a net does "
                                      f"not train, and it has {depth}", None, chi_value))
    return pieces


def _layer_count(n: float) -> str:
    return f"{n:.0f} layer{'' if round(n) == 1 else 's'}"


def _beyond_depth_scale(chi: float, depth: int) -> bool:
    """Deeper than 6 depth scales ξ = 1/|ln χ₁|: mean-field theory's limit of trainability."""
    return abs(math.log(chi)) * depth > 6


def _jacobian_in_depth(m: RunMetrics, t: Thresholds) -> bool:
    """χ₁ is evidence of a vanishing or exploding signal's finding."""
    return (chi := _jacobian_chi(m)) is not None and _beyond_depth_scale(chi[0], chi[1])


def _jacobian_chi(m: RunMetrics) -> tuple[float, int, str] | None:
    """(χ₁, depth, how it was known): measured where the probe measured it, with mean-field theory's prediction
    beside it; the prediction alone where nothing was measured."""
    spectrum = m.jacobian
    if spectrum is None or not spectrum.depths:
        return None
    # the net's depth: the spectrum stops short of it where the signal overflowed
    depth = max(spectrum.depths[-1][0], len(m.over_layers("act_std", "act")))
    measured, predicted = spectrum.chi_measured, spectrum.chi_predicted
    usable = [v for v in (measured, predicted) if v is not None and math.isfinite(v) and v > 0]
    if not usable:
        return None
    if measured is not None and measured in usable:
        beside = f", mean-field theory predicts {predicted:.2f}" if predicted is not None and predicted in usable \
            else ""
        return measured, depth, f"χ₁ = {measured:.2f} measured{beside}"
    return predicted, depth, f"χ₁ = {predicted:.2f} predicted by mean-field theory"


def _stall(m: RunMetrics) -> str:
    """', and the train loss stayed at 2.30 until step 400' where it did for a tenth of the run or more."""
    curve = m.train_curve
    if m.command != "train" or len(curve) < 3 or not math.isfinite(curve[0][1]):
        return ""
    start = curve[0][1]
    moved = next((step for step, loss in curve if loss < 0.95 * start), None)
    until = moved if moved is not None else curve[-1][0]
    if until < max(curve[1][0], m.steps / 10):
        return ""
    return f"; the train loss stayed near {start:.2f} " + (f"until step {until}" if moved is not None else
                                                            f"for all {m.steps} steps")


def signal_over_depth(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """A signal that vanishes or explodes over depth: one finding per way it goes, carrying every measurement of
    it (activations forward, gradients backward, χ₁, saturation on the way), at its worst step of the run."""
    pieces = _depth_pieces(m, t)
    found = []
    seen = _saturated(m, t)
    for way in ("vanishing", "exploding"):
        mine = [p for p in pieces if p.way == way]
        if not mine or (way == "exploding" and _overflow_at_init(m)):  # said by the divergence finding
            continue
        texts = [p.text for p in mine]
        if seen is not None and not found:  # saturation is part of this cause's evidence, said once
            texts.insert(0, _saturation_text(m, seen))
        steps = [p.step for p in mine if p.step is not None]
        at_init = not steps or min(steps) <= (_first_step(m, "act_std") or 1)
        act = _activation(m)
        remedies = _init_remedies(m, smaller=way == "exploding") if at_init else \
            [Remedy("lower the learning rate", training=True)]
        if _lost_across_batch_norm(mine, m):  # the batch's statistics are the cause
            remedies = [Remedy(f"a batch-independent norm ({_batch_free_norm(m)})"),
                        Remedy("a larger batch", training=True)]
            at_init = False
            if (gap := _bn_gap_text(m, t)) is not None:  # the same cause's other face
                texts.append(gap)
        if seen is not None:
            remedies.append(Remedy(f"act={act.instead}", "act", act.instead))
        if way == "exploding" and not at_init:
            remedies.append(Remedy("clip gradients (clip=norm)", "clip", "norm", training=True))
        cause = ("the init's scale is too " + ("small" if way == "vanishing" else "large") + " for the depth: ") \
            if at_init else ""
        worst = max(mine, key=lambda p: _magnitude(p.value))
        found.append(Finding(f"{way}_signal", "warning", f"{way} signal: " + "; ".join(texts) + _stall(m)
                             + _updates_by_depth(m), cause + _advice(m, *remedies, _normalise(m)), worst.layer,
                             min(steps) if steps else None, worst.value))
    return found


def _updates_by_depth(m: RunMetrics) -> str:
    """What the weights saw of it: the first and last layers' update/weight ratios, where they were measured."""
    ratios = [(name, v) for name, v in m.over_run("update_ratio").items() if v > 0]
    if len(ratios) < 2:
        return ""
    (first, low), (last, high) = ratios[0], ratios[-1]
    return f"; per step the updates are {low:.0e} of {first}'s weights and {high:.0e} of {last}'s"


def update_ratio(m: RunMetrics, t: Thresholds) -> list[Finding]:
    ratios = [v for v in m.over_run("update_ratio").values() if v]
    if not ratios:
        return []
    typical = median(ratios)
    where = "(median over layers and over the steps where the lr was at least 10% of its start; healthy is ~1e-3)"
    if typical > t.update_ratio_high:
        return [Finding("update_ratio_high", "warning", f"updates are {typical:.1e} of the weights per step {where}",
                        "lower the learning rate", None, m.steps, typical)]
    if typical < t.update_ratio_low:
        return [Finding("update_ratio_low", "warning", f"updates are only {typical:.1e} of the weights per step "
                        f"{where}", "raise the learning rate", None, m.steps, typical)]
    return []


def _first_linear(m: RunMetrics) -> str | None:
    """The first weight layer, where it is fully connected: it reads the inputs themselves."""
    first = next((name for name, r in m.layers.items() if r.role == "weight"), None)
    return first if first is not None and first.endswith(".linear") else None


def non_centred_inputs(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """The zig-zag of inputs that all share a sign, seen in the first layer when it is fully connected and reads
    the inputs themselves: it can only come from them when they are not centred (a high lr makes centred runs' signs
    agree at times too, which is not this)."""
    # fully connected only: a conv kernel's few weights see neighbouring pixels, which move together whatever the
    # inputs' mean, so their signs agree anyway
    name = _first_linear(m)
    value = m.over_run("sign_agreement").get(name) if name else None
    if value is None or value < t.sign_agreement or _setting(m, "data.center") is not False:
        return []
    return [Finding("non_centred_inputs", "warning", f"layer {name}: weight gradients agree in sign ({value:.2f} on "
                    f"average over the run; balanced is near 0) - the inputs are not zero-centred (data.center=false), "
                    f"so each unit's weights all move the same way and updates zig-zag",
                    "centre the inputs (data.center=true)", name, m.steps, value)]


def _sign_missing(m: RunMetrics) -> str | None:
    if (name := _first_linear(m)) is None:
        return None if m.layers else _statistics_off(m)
    return None if name in m.over_run("sign_agreement") else _statistics_off(m)


def _lost_across_batch_norm(pieces: list["_Piece"], m: RunMetrics) -> bool:
    return any(p.across == "norm" for p in pieces) and _norm(m).kind == BATCH


def _bn_in_depth(m: RunMetrics, t: Thresholds) -> bool:
    """BN's train/eval gap is evidence of a gradient lost across the BN layers: one cause, the batch's statistics."""
    return _bn_gap_text(m, t) is not None and _lost_across_batch_norm(_depth_pieces(m, t), m)


def _bn_gap_text(m: RunMetrics, t: Thresholds) -> str | None:
    gap = m.bn_train_eval_gap
    if gap is None or abs(gap) < t.bn_gap:
        return None
    lower = "eval mode (running statistics)" if gap > 0 else "train mode (batch statistics)"
    return f"BatchNorm: val accuracy is {abs(gap) * 100:.0f} points lower in {lower} than in the other mode at the " \
           f"last evaluation (step {m.last_evaluation.step})"


def bn_train_eval_gap(m: RunMetrics, t: Thresholds) -> list[Finding]:
    if (said := _bn_gap_text(m, t)) is None or _bn_in_depth(m, t):
        return []
    return [Finding("bn_train_eval_gap", "warning", f"{said} - train and test see differently normalised inputs",
                    _advice(m, Remedy("a larger batch", training=True),
                            Remedy(f"a batch-independent norm ({_batch_free_norm(m)})")), None,
                    m.last_evaluation.step, m.bn_train_eval_gap)]


def _gap_missing(m: RunMetrics) -> str | None:
    if m.bn_train_eval_gap is not None:
        return None
    if (why := _no_training(m)) is not None:
        return why
    if _setting(m, "diag.bn_eval_gap") is False:
        return "off: diag.bn_eval_gap=false"
    if _setting(m, "data.val_size") == 0:
        return "no validation split: data.val_size=0"
    return "no evaluation"


def batch_vs_noise_scale(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """The batch against the gradient noise scale B_simple (McCandlish et al. 2018), which predicts the critical
    batch size: well below it, steps are what costs; well above it, examples are. Where |G|² was not resolved from
    its noise, only B_simple's lower bound speaks, and only for "far below"."""
    noise = m.noise
    if noise is None or m.status != "completed":
        return []
    batch, last = noise.batch, noise.history[-1][0] if noise.history else m.steps
    resolved = math.isfinite(noise.b_simple) and noise.b_simple > 0
    scale = noise.b_simple if resolved else noise.b_simple_low
    if not math.isfinite(scale) or scale <= 0:
        return []
    said = f"~{about(scale)}" if resolved else f"at least ~{about(scale)} (|G|² is still within its noise)"
    if batch * t.noise_ratio <= scale:
        return [Finding("batch_vs_noise_scale", "info", f"batch {batch} is far below the gradient noise scale "
                        f"B_simple {said} at step {last}: each step's gradient is mostly noise",
                        "a larger batch (with the lr scaled along) would need proportionally fewer steps for nearly "
                        "the same number of examples", None, last, scale)]
    if resolved and batch >= t.noise_ratio * scale:
        return [Finding("batch_vs_noise_scale", "info", f"batch {batch} is far above the gradient noise scale "
                        f"B_simple ~{about(scale)} at step {last}: most of each batch is wasted",
                        f"a smaller batch (~{about(scale)}) would reach the same loss from far fewer examples", None,
                        last, scale)]
    return []


def _noise_missing(m: RunMetrics) -> str | None:
    if m.noise is not None:
        return None
    return _no_training(m) or "off: diag.noise_every=0"


EDGE = (0.8, 1.5)  # λ_max within this band of the threshold, typically, after reaching it: the edge of stability


def sharpness(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """λ_max against the stability threshold 2(1+β)/lr of SGD (Cohen et al. 2021): along the sharpest direction a
    step above it overshoots. In a run that diverged, that is why; in one that did not, it says where λ_max went
    after reaching the threshold: held at it (the edge of stability) or above it."""
    if m.curvature is None:
        return []
    points = [(step, top, threshold) for step, top, _, threshold in m.curvature.history
              if threshold is not None and math.isfinite(top)]
    reached = next((i for i, (_, top, threshold) in enumerate(points) if top >= threshold), None)
    if reached is None:
        return []
    since = [(step, top / threshold) for step, top, threshold in points[reached:]]
    ratios = [r for _, r in since]
    peak_step, peak = max(since, key=lambda p: p[1])
    first_step, _, first_threshold = points[reached]
    seen = (f"the sharpness λ_max reached the stability threshold 2(1+momentum)/lr = {about(first_threshold)} at "
            f"step {first_step}")
    if m.status == "diverged":
        return [Finding("sharpness", "error", f"training diverged after {seen}, up to {peak:.1f}x it at step "
                        f"{peak_step}: along the sharpest direction each step overshoots and grows",
                        "the lr is above what this curvature allows: "
                        + _advice(m, Remedy("lower it"), _normalise(m)), None, peak_step, peak)]
    typical = median(ratios)
    band = f"{min(ratios):.1f}-{max(ratios):.1f}x" if len(ratios) > 1 else f"{ratios[0]:.1f}x"
    where = (f"; over the {len(ratios)} measurements since, it stayed at {band} the threshold (median {typical:.1f}x)")
    loss = _loss_since(m, first_step)
    if EDGE[0] <= typical <= EDGE[1]:
        return [Finding("sharpness", "info", f"{seen}{where}{loss}: training runs at the edge of stability (Cohen et "
                        "al. 2021), λ_max held at the threshold the lr sets",
                        "a lower lr would follow the landscape more smoothly, at the price of more steps", None,
                        first_step, typical)]
    return [Finding("sharpness", "warning" if typical > EDGE[1] else "info", f"{seen}{where}{loss}",
                    "the lr is above what this curvature allows along its sharpest direction: a lower lr"
                    if typical > EDGE[1] else "", None, peak_step, typical)]


def _loss_since(m: RunMetrics, step: int) -> str:
    """', while the train loss fell from 0.81 to 0.42' (or rose) from `step` to the end, where it was logged."""
    after = [(s, loss) for s, loss in m.train_curve if s >= step and math.isfinite(loss)]
    if len(after) < 2:
        return ""
    start, end = after[0][1], after[-1][1]
    return f", while the train loss {'fell' if end < start else 'rose'} from {start:.2f} to {end:.2f}"


def _curvature_missing(m: RunMetrics) -> str | None:
    if m.curvature is None:
        return _no_training(m) or "off: diag.curvature_every=0"
    if all(point[3] is None for point in m.curvature.history):
        return f"no stability threshold for optim={_setting(m, 'optim')} (SGD's only)"
    return None


def jacobian_depth(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """`diagnose probe`, near criticality (χ₁ within 10% of 1, and not past ~6 depth scales, where χ₁ is evidence of
    a vanishing or exploding signal): how much the mean squared singular value changed over the depth, and whether
    the spectrum stays isometric."""
    chi = _jacobian_chi(m)
    if chi is None:
        return []
    value, depth, said = chi
    if abs(value - 1) > 0.1 or _beyond_depth_scale(value, depth):
        return []
    measured, mean_sq, std_sq = m.jacobian.depths[-1][:3]  # (older metrics.json: 5 or 6 entries a depth)
    change = value ** (depth - 1)
    held = "holds over depth" if 0.5 <= change <= 2 else \
        f"{'shrinks' if change < 1 else 'grows'} {change if change > 1 else 1 / change:.2g}x over {depth} layers " \
        f"(within ~6ξ ≈ {_layer_count(6 / abs(math.log(value)))}, where a net still trains)"
    spread = std_sq / mean_sq if mean_sq > 0 else math.inf
    if spread <= 1:
        return [Finding("jacobian_depth", "info", f"{said}: the mean squared singular value {held}, and the squared "
                        f"singular values stay together (std/mean {spread:.2f} at depth {measured}): near dynamical "
                        f"isometry, every input direction reaches the output with about the same gain", "", None,
                        None, value)]
    return [Finding("jacobian_depth", "info", f"{said}: the mean squared singular value {held}, but they spread "
                    f"(std/mean {spread:.1f} at depth {measured}): some directions are amplified, others lost",
                    "orthogonal weights (init=orthogonal) spread less than Gaussian ones (Pennington et al. 2017)"
                    if Remedy("", "init", "orthogonal").fits(m) else "", None, None, value)]


def _jacobian_missing(m: RunMetrics) -> str | None:
    if m.jacobian is not None:
        return None
    if _setting(m, "probe.jacobian") == "off":
        return "off: probe.jacobian=off"
    if _your_model(m):
        return "measured between the tool's own blocks, not on your model"
    return f"not defined with norm={_setting(m, 'norm')}, which normalises with the batch's statistics"


def depth_scale_of(chi: float) -> float:
    return math.inf if chi == 1 else 1 / abs(math.log(chi))


def _never(m: RunMetrics) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    """A rule, as the closing line names it; for which runs it means something, why it had nothing to judge (None:
    it had data), and when what it saw is evidence in another rule's finding (one cause, one finding), so that it
    neither speaks nor passed."""

    name: str
    judge: Callable[[RunMetrics, Thresholds], list[Finding]]
    applies: Callable[[RunMetrics], bool] = lambda m: True
    missing: Callable[[RunMetrics], str | None] = _never
    elsewhere: Callable[[RunMetrics, Thresholds], bool] = lambda m, t: False

    def __call__(self, m: RunMetrics, t: Thresholds) -> list[Finding]:
        return self.judge(m, t)


def _training(m: RunMetrics) -> bool:
    return m.command == "train"


RUN_RULES: list[Rule] = [
    Rule("divergence", divergence, missing=_no_training),
    Rule("zero-init symmetry", symmetry, missing=_no_training),
    Rule("accuracy above chance", did_not_learn, _training, _accuracy_missing),
    Rule("dead ReLUs", dead_relus, lambda m: _has_kind(m, RELU_LIKE), _dead_missing, _dead_by_symmetry),
    Rule("saturation", saturation, lambda m: _has_kind(m, SATURATING), _needs("saturation", "act"),
         _saturation_in_depth),
    Rule("signal over depth", signal_over_depth, missing=_needs("act_std", "act", layers=2),
         elsewhere=_growth_in_divergence),
    Rule("update/weight ratio", update_ratio, _training, _needs("update_ratio")),
    Rule("centred inputs", non_centred_inputs, lambda m: _training(m) and _setting(m, "data.center") is False,
         _sign_missing),
    Rule("BN train/eval gap", bn_train_eval_gap, lambda m: _training(m) and _has_norm_kind(m, BATCH), _gap_missing,
         _bn_in_depth),
    Rule("batch vs noise scale", batch_vs_noise_scale, _training, _noise_missing),
    Rule("sharpness", sharpness, _training, _curvature_missing),
    Rule("Jacobian depth scale", jacobian_depth, lambda m: m.command == "probe", _jacobian_missing,
         _jacobian_in_depth),
]


def run_findings(metrics: RunMetrics, thresholds: Thresholds) -> list[Finding]:
    """Every rule's findings, errors first, and one closing info entry: the checks that had data and passed, and
    those that were not measured, with why."""
    found, passed, missing = [], [], []
    for rule in RUN_RULES:
        if not rule.applies(metrics):
            continue
        judged = rule(metrics, thresholds)
        found += judged
        why = rule.missing(metrics)
        if judged or rule.elsewhere(metrics, thresholds):
            continue
        if why is not None:
            missing.append(f"{rule.name} ({why})")
        else:
            passed.append(rule.name)
    causes = [f for f in found if f.severity != "info" and f.rule != "did_not_learn"]
    found = [f if f.rule != "did_not_learn" or not causes else
             Finding(**{**asdict(f), "remedy": "the other findings say what went wrong"}) for f in found]
    found = sorted(found, key=lambda f: SEVERITIES.index(f.severity))
    closing = "; ".join([f"{'the other' if found else 'these'} checks passed - {', '.join(passed)}" if passed else
                         f"no {'other ' if found else ''}check passed",
                         *([f"not measured - {', '.join(missing)}"] if missing else [])])
    found.append(Finding("checks", "info", closing, "") if found else
                 Finding("no_findings", "info", f"no findings: {closing}", ""))
    return found


def bn_small_batch(runs: list[Any], thresholds: Thresholds, swept: list[str] | None = None) -> list[Finding]:
    """In a sweep over batch sizes: BN runs whose val accuracy (mean over seeds) at the smallest batch is far below
    the largest, set against a batch-independent norm's runs over the same batches where the sweep has them, which
    are recommended only where they measured better. One finding per combination of the other `swept` keys (all
    the runs' overrides when not given)."""
    accs: dict[tuple[str, str], dict[int, list[float]]] = {}
    for run in runs:
        config, acc = run.metrics.config, run.metrics.final.val_acc
        if acc is None or run.status != "completed" or "batch" not in config:
            continue
        keys = sorted(run.overrides if swept is None else swept)
        others = ",".join(f"{k}={run.overrides.get(k)}" for k in keys if k not in ("batch", "norm", "seed"))
        accs.setdefault((config.get("norm", {}).get("name"), others), {}).setdefault(config["batch"], []).append(acc)
    by_norm = {key: {batch: sum(v) / len(v) for batch, v in by_batch.items()} for key, by_batch in accs.items()}
    found = []
    for (norm, others), by_batch in by_norm.items():
        if norm != "bn" or len(by_batch) < 2:
            continue
        small, large = min(by_batch), max(by_batch)
        drop = by_batch[large] - by_batch[small]
        if math.isnan(drop) or drop < thresholds.bn_batch_drop:
            continue
        controls = sorted((name, acc) for (name, rest), acc in by_norm.items()
                          if name in ("gn", "ln") and rest == others and small in acc and large in acc)
        said = [_change(name.upper(), (acc[large] - acc[small]) * 100) for name, acc in controls]
        control = f", while {' and '.join(said)} over the same batches" if said else ""
        context = f" ({others})" if others else ""
        better = [f"norm={name} ({acc[small]:.2f} at batch {small})" for name, acc in controls
                  if acc[small] > by_batch[small]]
        remedy = f"use {' or '.join(better)}, which measured better at batch {small} and does not depend on the " \
                 f"batch" if better else \
            f"a batch of {large} (measured {drop * 100:.0f} points better)" + \
            ("" if controls else "; a batch-independent norm (norm=gn or ln) is not in this sweep: add it to compare")
        found.append(Finding("bn_small_batch", "warning", f"BN at batch {small}: val accuracy {drop * 100:.0f} "
                             f"points below batch {large}{control}{context}", remedy, None, None, drop))
    return found


def _change(norm: str, drop: float) -> str:
    return f"{norm} drops {drop:.0f}" if drop >= 0.5 else f"{norm} gains {-drop:.0f}" if drop <= -0.5 else \
        f"{norm} stays within a point"


def as_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]


def as_markdown(findings: list[Finding]) -> str:
    """For TensorBoard's Text tab: one bullet per finding."""
    return "\n".join(f"- **{f.severity}**: {f.text()}" for f in findings)
