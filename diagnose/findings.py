"""Rules that turn statistics into plain-language findings: what is wrong, the evidence, the remedy.

Every rule reads what a run stores (RunMetrics: metrics.json, or a sweep's runs): nothing but the stored numbers.
A rule speaks once for all the layers it concerns, with the range it saw; a remedy never names a setting the run
already uses; findings come ordered by severity (error: the run failed or cannot learn; warning; info), and a run
with none says which checks it passed.
"""

import math
from collections.abc import Callable
from dataclasses import asdict
from statistics import median
from typing import Any

from diagnose.components.activations import ACTIVATIONS
from diagnose.config import Thresholds
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


def _activation(m: RunMetrics) -> Any:
    """The registry entry of the run's activation (relu's for a run that does not say)."""
    return ACTIVATIONS.get(m.config.get("act", {}).get("name"), ACTIVATIONS["relu"])


def _uses(m: RunMetrics, key: str, wanted: str | Callable[[Any], bool]) -> bool:
    """Does the run's config already have `key` (a group's option name, or a dotted setting) as `wanted`?"""
    node: Any = m.config
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else None
    value = node.get("name") if isinstance(node, dict) else node
    return wanted(value) if callable(wanted) else value == wanted


def _advice(m: RunMetrics, *remedies: tuple[str, str | None, str | Callable[[Any], bool] | None]) -> str:
    """The remedies, in order, leaving out any that asks for what the run already has: each is (text, the key it
    sets or None, the value it asks for)."""
    kept = [text for text, key, wanted in remedies if key is None or not _uses(m, key, wanted)]
    if len(kept) > 2:
        return ", ".join(kept[:-1]) + f", or {kept[-1]}"
    return " or ".join(kept)


def _span(values: list[float]) -> str:
    """'89-95%', or '61%' when they round alike."""
    low, high = f"{min(values) * 100:.0f}", f"{max(values) * 100:.0f}"
    return f"{low}%" if low == high else f"{low}-{high}%"


def _layers(names: list[str], of: int, kind: str) -> str:
    """'3 of 3 ReLU layers (features.0.act, features.2.act, features.4.act)', the list cut short when long."""
    shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]}"
    return f"{len(names)} of {of} {kind} layers ({shown})"


def divergence(m: RunMetrics, t: Thresholds) -> list[Finding]:
    found = m.nonfinite
    if found is None:
        return []
    init = _activation(m).init
    if m.command == "probe" or found.step == 1:  # no update has happened yet: the initial weights overflow
        what = "the signal overflows to NaN/Inf at initialisation" if m.command == "probe" else \
            "training diverged at its first step, before any update"
        return [Finding("divergence", "error", f"{what}: the {found.describe()}",
                        "the initial weights are too large for the depth: "
                        + _advice(m, (f"use {init}", "init", init), ("add normalisation", "norm", _any_norm),
                                  ("use a smaller init.std", None, None)), found.layer, found.step)]
    return [Finding("divergence", "error", f"training diverged: the {found.describe()}",
                    _advice(m, ("lower the learning rate", None, None), ("clip gradients (clip=norm)", "clip", "norm"),
                            ("add normalisation", "norm", _any_norm)), found.layer, found.step)]


def _any_norm(name: Any) -> bool:
    return name not in (None, "none")


def symmetry(m: RunMetrics, t: Thresholds) -> list[Finding]:
    if not m.symmetric_layers:
        return []
    names = m.symmetric_layers
    weights = len([r for r in m.layers.values() if r.role == "weight"]) or len(names)
    return [Finding("zero_init_symmetry", "error", f"all units have identical weights and get identical gradients in "
                    f"{_layers(names, weights, 'weight')} - the symmetry never breaks, each layer acts as one unit",
                    "use a random init (kaiming_normal, xavier_normal), not zeros", names[0])]


def did_not_learn(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """A completed run that ends at chance accuracy (the other findings usually say why)."""
    split, acc = ("val", m.final.val_acc) if m.final.val_acc is not None else ("test", m.final.test_acc)
    if m.command != "train" or m.status != "completed" or acc is None or not m.classes:
        return []
    chance = 1 / m.classes
    if acc > chance + t.chance_margin:
        return []
    return [Finding("did_not_learn", "error", f"the network did not learn: {split} accuracy {acc:.3f} is chance for "
                    f"{m.classes} classes ({chance:.3f}) after {m.steps} steps",
                    "see the other findings; a learning rate far off, a zero init or saturated units are the usual "
                    "causes", None, m.steps, acc)]


def dead_relus(m: RunMetrics, t: Thresholds) -> list[Finding]:
    relus = [(name, v) for name, r in m.layers.items() if r.role == "act" and (v := r.values.get("dead")) is not None]
    dead = [(name, v) for name, v in relus if v >= t.dead]
    if not dead:
        return []
    starts = [s for name, _ in dead if (s := next((step for step, share in m.dead_history.get(name, [])
                                                   if share >= t.dead), None)) is not None]
    when = f", from step {min(starts)}" if starts else ""
    act = _activation(m)
    return [Finding("dead_relu", "warning", f"{_span([v for _, v in dead])} dead ReLU units in "
                    f"{_layers([n for n, _ in dead], len(relus), 'ReLU')}{when}: no gradient reaches them",
                    _advice(m, ("lower the learning rate", None, None), (f"use {act.instead}", "act", act.instead),
                            (f"{act.init} init", "init", act.init)),
                    dead[0][0], min(starts) if starts else None, max(v for _, v in dead))]


def saturation(m: RunMetrics, t: Thresholds) -> list[Finding]:
    layers = [(name, v) for name, v in m.over_layers("saturation")]
    flat = [(name, v) for name, v in layers if v >= t.saturation]
    if not flat:
        return []
    act = _activation(m)
    kind = m.config.get("act", {}).get("name", "saturating")
    return [Finding("saturation", "warning", f"{_span([v for _, v in flat])} of outputs saturated in "
                    f"{_layers([n for n, _ in flat], len(layers), kind)}, where the gradient through them is nearly "
                    f"zero", _advice(m, (f"use smaller initial weights ({act.init})", "init", act.init),
                                     (f"a non-saturating activation ({act.instead})", "act", act.instead),
                                     ("normalisation", "norm", _any_norm)),
                    flat[0][0], m.steps, max(v for _, v in flat))]


def signal_over_depth(m: RunMetrics, t: Thresholds) -> list[Finding]:
    found = []
    init = _activation(m).init
    fix = _advice(m, (f"use {init}", "init", init), ("add normalisation", "norm", _any_norm),
                  ("change init.std", None, None))
    stds = m.over_layers("act_std", role="act")
    overflow = next((name for name, v in stds if not math.isfinite(v)), None)
    if overflow is not None:
        found.append(Finding("exploding_activations", "warning", f"activation std grows beyond float32's range "
                             f"(inf/nan) by {overflow} - exploding signal",
                             f"the init scale is too large for the depth: {fix}", overflow, m.steps, math.inf))
    elif len(stds) >= 2 and stds[0][1] > 0:
        ratio = max(stds[-1][1] / stds[0][1], 1e-300)  # a signal that vanished to exactly 0 is still "vanishing"
        span = f"over {len(stds)} layers ({stds[0][0]} to {stds[-1][0]})"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_activations", "warning",
                                 f"activation std falls {_times(1 / ratio)} {span} - vanishing signal",
                                 f"the init scale is too small for the depth: {fix}", stds[-1][0], m.steps, ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_activations", "warning",
                                 f"activation std grows {_times(ratio)} {span} - exploding signal",
                                 f"the init scale is too large for the depth: {fix}", stds[-1][0], m.steps, ratio))
    grads = [(name, v) for name, v in m.over_layers("grad_norm", role="act") if math.isfinite(v)]
    if len(grads) >= 2 and grads[-1][1] > 0:
        ratio = max(grads[0][1] / grads[-1][1], 1e-300)  # first layer's gradient relative to the last one's
        span = f"from {grads[-1][0]} back to {grads[0][0]}"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_gradients", "warning",
                                 f"the gradient w.r.t. the layers' outputs falls {_times(1 / ratio)} {span}"
                                 f"{_updates_by_depth(m)}",
                                 _advice(m, ("use a non-saturating activation", "act", _not_saturating),
                                         (f"{init} init", "init", init), ("normalisation", "norm", _any_norm),
                                         ("residual paths", None, None)), grads[0][0], m.steps, ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_gradients", "warning",
                                 f"the gradient w.r.t. the layers' outputs grows {_times(ratio)} {span}"
                                 f"{_updates_by_depth(m)}",
                                 _advice(m, ("lower the init scale or the learning rate", None, None),
                                         ("clip gradients (clip=norm)", "clip", "norm")), grads[0][0], m.steps, ratio))
    return found


def _not_saturating(name: Any) -> bool:
    return name not in ("sigmoid", "tanh")


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


def non_centred_inputs(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """The zig-zag of inputs that all share a sign, seen in the first fully connected layer, which reads the inputs
    themselves: it can only come from them when they are not centred (a high lr makes centred runs' signs agree
    at times too, which is not this)."""
    # fully connected layers only: a conv kernel's few weights see neighbouring pixels, which move together
    # whatever the inputs' mean, so their signs agree anyway
    weights = [(name, v) for name, v in m.over_run("sign_agreement").items() if name.endswith(".linear")]
    if not weights or weights[0][1] < t.sign_agreement or _uses(m, "data.center", True):
        return []
    name, value = weights[0]
    return [Finding("non_centred_inputs", "warning", f"layer {name}: weight gradients agree in sign ({value:.2f} on "
                    f"average over the run; balanced is near 0) - the inputs are not zero-centred (data.center=false), "
                    f"so each unit's weights all move the same way and updates zig-zag",
                    "centre the inputs (data.center=true)", name, m.steps, value)]


def bn_train_eval_gap(m: RunMetrics, t: Thresholds) -> list[Finding]:
    gap = m.bn_train_eval_gap
    if gap is None or abs(gap) < t.bn_gap:
        return []
    lower = "eval mode (running statistics)" if gap > 0 else "train mode (batch statistics)"
    return [Finding("bn_train_eval_gap", "warning", f"BatchNorm: val accuracy is {abs(gap) * 100:.0f} points lower "
                    f"in {lower} than in the other mode - train and test see differently normalised inputs",
                    "use a larger batch, or a batch-independent norm (norm=gn or norm=ln)", None,
                    m.last_evaluation.step, gap)]


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
                        f"B_simple {said} at the end of training: each step's gradient is mostly noise",
                        "a larger batch (with the lr scaled along) would need proportionally fewer steps for nearly "
                        "the same number of examples", None, last, scale)]
    if resolved and batch >= t.noise_ratio * scale:
        return [Finding("batch_vs_noise_scale", "info", f"batch {batch} is far above the gradient noise scale "
                        f"B_simple ~{about(scale)} at the end of training: most of each batch is wasted",
                        f"a smaller batch (~{about(scale)}) would reach the same loss from far fewer examples", None,
                        last, scale)]
    return []


def sharpness(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """λ_max above the stability threshold 2(1+β)/lr of SGD (Cohen et al. 2021): along the sharpest direction each
    step overshoots. In a run that diverged, that is why; in one that did not, it trains at the edge of stability."""
    if m.curvature is None:
        return []
    above = [(step, top, threshold) for step, top, _, threshold in m.curvature.history
             if threshold is not None and math.isfinite(top) and top > threshold]
    if not above:
        return []
    step, top, threshold = max(above, key=lambda point: point[1] / point[2])
    ratio = top / threshold
    seen = (f"the sharpness λ_max reached {about(top)}, {f'{ratio:.1f}' if ratio < 10 else about(ratio)}x the "
            f"stability threshold "
            f"2(1+momentum)/lr = {about(threshold)} (step {step}; {len(above)} of "
            f"{len(m.curvature.history)} measurements above it)")
    if m.status == "diverged":
        return [Finding("sharpness", "error", f"training diverged and {seen}: along the sharpest direction each "
                        "step overshoots and grows", "the lr is above what this curvature allows: "
                        + _advice(m, ("lower it", None, None), ("add normalisation", "norm", _any_norm)), None, step,
                        top)]
    return [Finding("sharpness", "info", f"{seen}: training runs at the edge of stability, the loss oscillating "
                    "along the sharpest direction while it still falls (Cohen et al. 2021)",
                    "a lower lr would follow the landscape more smoothly, at the price of more steps", None, step,
                    top)]


def jacobian_depth(m: RunMetrics, t: Thresholds) -> list[Finding]:
    """`diagnose probe`: the Jacobian's growth per layer χ₁ against the depth (mean-field theory: a net much deeper
    than ~6ξ, ξ = 1/|ln χ₁|, does not train), and at χ₁ ≈ 1 whether its spectrum stays isometric."""
    spectrum = m.jacobian
    if spectrum is None or not spectrum.depths:
        return []
    chi = spectrum.chi_predicted if spectrum.chi_predicted is not None else spectrum.chi_measured
    if chi is None or not math.isfinite(chi) or chi <= 0:
        return []
    depth, mean_sq, std_sq = spectrum.depths[-1][:3]  # (older metrics.json: 5 or 6 entries a depth)
    scale = depth_scale_of(chi)
    if abs(math.log(chi)) * depth > 6:  # deeper than 6 xi
        way = "shrink" if chi < 1 else "grow"
        phase = "the ordered phase: inputs collapse together" if chi < 1 else \
            "the chaotic phase: nearby inputs are torn apart"
        return [Finding("jacobian_depth", "warning", f"χ₁ = {chi:.2f}: the Jacobian's squared singular values {way} "
                        f"{chi:.2f}x per layer ({phase}); beyond ~6ξ ≈ {6 * scale:.0f} layers the net will not "
                        f"train, and it has {depth}", "choose the init's scale for χ₁ = 1: "
                        + _advice(m, (f"use {_activation(m).init}", "init", _activation(m).init),
                                  ("add normalisation", "norm", _any_norm)), None, None, chi)]
    if abs(chi - 1) > 0.1:  # off criticality, but shallow enough for it
        return []
    spread = std_sq / mean_sq if mean_sq > 0 else math.inf
    if spread <= 1:
        return [Finding("jacobian_depth", "info", f"χ₁ = {chi:.2f} and the squared singular values stay together "
                        f"(std/mean {spread:.2f} at depth {depth}): near dynamical isometry, every input direction "
                        f"reaches the output with about the same gain", "", None, None, chi)]
    return [Finding("jacobian_depth", "info", f"χ₁ = {chi:.2f}: the mean squared singular value holds over depth, "
                    f"but they spread (std/mean {spread:.1f} at depth {depth}): some directions are amplified, "
                    f"others lost", "orthogonal weights (init=orthogonal) spread less than Gaussian ones "
                    "(Pennington et al. 2017)" if not _uses(m, "init", "orthogonal") else "", None, None, chi)]


def depth_scale_of(chi: float) -> float:
    return math.inf if chi == 1 else 1 / abs(math.log(chi))


RUN_RULES: list[Callable[[RunMetrics, Thresholds], list[Finding]]] = [
    divergence, symmetry, did_not_learn, dead_relus, saturation, signal_over_depth, update_ratio, non_centred_inputs,
    bn_train_eval_gap, batch_vs_noise_scale, sharpness, jacobian_depth,
]


def run_findings(metrics: RunMetrics, thresholds: Thresholds) -> list[Finding]:
    """Every rule's findings, errors first; on a run none of them fires, one info entry naming the checks."""
    found = [finding for rule in RUN_RULES for finding in rule(metrics, thresholds)]
    if not found:
        checks = ", ".join(rule.__name__.replace("_", " ") for rule in RUN_RULES)
        found = [Finding("no_findings", "info", f"no findings: these checks passed - {checks}", "")]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


def bn_small_batch(runs: list[Any], thresholds: Thresholds, swept: list[str] | None = None) -> list[Finding]:
    """In a sweep over batch sizes: BN runs whose val accuracy (mean over seeds) at the smallest batch is far below
    the largest, set against a batch-independent norm's runs over the same batches where the sweep has them. One
    finding per combination of the other `swept` keys (all the runs' overrides when not given)."""
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
        controls = [_change(name.upper(), (acc[large] - acc[small]) * 100)
                    for (name, rest), acc in sorted(by_norm.items(), key=lambda item: str(item[0]))
                    if name in ("gn", "ln") and rest == others and small in acc and large in acc]
        control = f", while {' and '.join(controls)} over the same batches" if controls else ""
        context = f" ({others})" if others else ""
        found.append(Finding("bn_small_batch", "warning", f"BN at batch {small}: val accuracy {drop * 100:.0f} "
                             f"points below batch {large}{control}{context}",
                             "use norm=gn (or ln), which does not depend on the batch", None, None, drop))
    return found


def _change(norm: str, drop: float) -> str:
    return f"{norm} drops {drop:.0f}" if drop >= 0.5 else f"{norm} gains {-drop:.0f}" if drop <= -0.5 else \
        f"{norm} stays within a point"


def as_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]


def as_markdown(findings: list[Finding]) -> str:
    """For TensorBoard's Text tab: one bullet per finding."""
    return "\n".join(f"- **{f.severity}**: {f.text()}" for f in findings)
