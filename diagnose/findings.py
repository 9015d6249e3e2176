"""Rules that turn statistics into plain-language findings: what is wrong, the evidence, the remedy.

Every rule reads what a run stores (RunMetrics: metrics.json, or a sweep's runs): nothing but the stored numbers.
Remedies follow the run's components, as their registry entries describe them.
"""

import math
from collections.abc import Callable
from dataclasses import asdict
from statistics import median
from typing import Any

from diagnose.components.activations import ACTIVATIONS, Activation
from diagnose.config import Thresholds
from diagnose.results import Finding, RunMetrics


def _times(ratio: float) -> str:
    return f"{ratio:.0e}x" if ratio >= 1000 else f"{ratio:.0f}x"


def _activation(m: RunMetrics) -> Activation:
    """The registry entry of the run's activation (relu's for a run that does not say)."""
    return ACTIVATIONS.get(m.config.get("act", {}).get("name"), ACTIVATIONS["relu"])


def dead_relus(m: RunMetrics, t: Thresholds) -> list[Finding]:
    found = []
    act = _activation(m)
    for name, dead in m.over_layers("dead"):
        if dead < t.dead:
            continue
        since = next((step for step, fraction in m.dead_history.get(name, []) if fraction >= t.dead), None)
        when = f" from step {since}" if since is not None else ""
        found.append(Finding("dead_relu", "warning", f"layer {name}: {dead:.0%} dead ReLU units{when}",
                             f"lower the learning rate, use {act.instead}, or {act.init} init", name, since, dead))
    return found


def saturation(m: RunMetrics, t: Thresholds) -> list[Finding]:
    act = _activation(m)
    return [Finding("saturation", "warning", f"layer {name}: {value:.0%} of outputs saturated, where the "
                    f"gradient through them is nearly zero",
                    f"use smaller initial weights ({act.init}), a non-saturating activation ({act.instead}), or "
                    f"normalisation", name, m.steps, value)
            for name, value in m.over_layers("saturation") if value >= t.saturation]


def signal_over_depth(m: RunMetrics, t: Thresholds) -> list[Finding]:
    found = []
    init = _activation(m).init
    stds = m.over_layers("act_std", role="act")
    if len(stds) >= 2 and stds[0][1] > 0:
        ratio = max(stds[-1][1] / stds[0][1], 1e-300)  # a signal that vanished to exactly 0 is still "vanishing"
        span = f"over {len(stds)} layers ({stds[0][0]} to {stds[-1][0]})"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_activations", "warning",
                                 f"activation std falls {_times(1 / ratio)} {span} - vanishing signal",
                                 f"the init std is too small for the depth: use {init}, or add normalisation",
                                 stds[-1][0], m.steps, ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_activations", "warning",
                                 f"activation std grows {_times(ratio)} {span} - exploding signal",
                                 f"the init std is too large for the depth: use {init}, or add normalisation",
                                 stds[-1][0], m.steps, ratio))
    grads = m.over_layers("grad_norm", role="act")
    if len(grads) >= 2 and grads[-1][1] > 0:
        ratio = max(grads[0][1] / grads[-1][1], 1e-300)  # first layer's gradient relative to the last one's
        span = f"from {grads[-1][0]} back to {grads[0][0]}"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_gradients", "warning",
                                 f"gradient norm falls {_times(1 / ratio)} {span} - early layers hardly learn",
                                 f"use a non-saturating activation, {init} init, normalisation or residual paths",
                                 grads[0][0], m.steps, ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_gradients", "warning", f"gradient norm grows {_times(ratio)} {span}",
                                 "lower the init scale or the learning rate, clip gradients (clip=norm)",
                                 grads[0][0], m.steps, ratio))
    return found


def update_ratio(m: RunMetrics, t: Thresholds) -> list[Finding]:
    ratios = [v for v in m.over_run("update_ratio").values() if v]
    if not ratios:
        return []
    typical = median(ratios)
    if typical > t.update_ratio_high:
        return [Finding("update_ratio_high", "warning", f"updates are {typical:.1e} of the weights per step "
                        f"(median over layers; healthy is about 1e-3)", "lower the learning rate",
                        None, m.steps, typical)]
    if typical < t.update_ratio_low:
        return [Finding("update_ratio_low", "warning", f"updates are only {typical:.1e} of the weights per step "
                        f"(median over layers; healthy is about 1e-3)", "raise the learning rate",
                        None, m.steps, typical)]
    return []


def divergence(m: RunMetrics, t: Thresholds) -> list[Finding]:
    if m.nonfinite is None:
        return []
    found = m.nonfinite
    return [Finding("divergence", "error", f"training diverged: the {found.describe()}",
                    "lower the learning rate, clip gradients (clip=norm), or add normalisation",
                    found.layer, found.step)]


def non_centred_inputs(m: RunMetrics, t: Thresholds) -> list[Finding]:
    # fully connected layers only: a conv kernel's few weights see neighbouring pixels, which move together
    # whatever the inputs' mean, so their signs agree anyway
    weights = [(name, v) for name, v in m.over_run("sign_agreement").items() if name.endswith(".linear")]
    if not weights or weights[0][1] < t.sign_agreement:
        return []
    name, value = weights[0]
    centred = m.config.get("data", {}).get("center", True)
    cause = "the inputs are not zero-centred (data.center=false)" if not centred else "the layer's inputs share a sign"
    return [Finding("non_centred_inputs", "warning", f"layer {name}: weight gradients agree in sign ({value:.2f} "
                    f"on average; balanced is near 0) - {cause}, so updates zig-zag",
                    "centre the inputs (data.center=true) or use a zero-centred activation before this layer",
                    name, m.steps, value)]


def symmetry(m: RunMetrics, t: Thresholds) -> list[Finding]:
    return [Finding("zero_init_symmetry", "error", f"layer {name}: all units have identical weights and get "
                    f"identical gradients - the symmetry never breaks, the layer acts as one unit",
                    "use a random init (kaiming_normal, xavier_normal), not zeros", name)
            for name in m.symmetric_layers]


def bn_train_eval_gap(m: RunMetrics, t: Thresholds) -> list[Finding]:
    gap = m.bn_train_eval_gap
    if gap is None or abs(gap) < t.bn_gap:
        return []
    lower = "eval mode (running statistics)" if gap > 0 else "train mode (batch statistics)"
    return [Finding("bn_train_eval_gap", "warning", f"BatchNorm: val accuracy is {abs(gap) * 100:.0f} points lower "
                    f"in {lower} than in the other mode - train and test see differently normalised inputs",
                    "use a larger batch, or a batch-independent norm (norm=gn or norm=ln)", None,
                    m.last_evaluation.step, gap)]


RUN_RULES: list[Callable[[RunMetrics, Thresholds], list[Finding]]] = [
    divergence, symmetry, dead_relus, saturation, signal_over_depth, update_ratio, non_centred_inputs,
    bn_train_eval_gap,
]


def run_findings(metrics: RunMetrics, thresholds: Thresholds) -> list[Finding]:
    return [finding for rule in RUN_RULES for finding in rule(metrics, thresholds)]


def bn_small_batch(runs: list[Any], thresholds: Thresholds) -> list[Finding]:
    """In a sweep over batch sizes: BN runs whose val accuracy at the smallest batch is far below the largest."""
    groups: dict[str, dict[int, float]] = {}
    for run in runs:
        config = run.metrics.config
        acc = run.metrics.final.val_acc
        if config.get("norm", {}).get("name") != "bn" or acc is None or run.status != "completed":
            continue
        others = ",".join(f"{k}={v}" for k, v in sorted(run.overrides.items()) if k != "batch")
        groups.setdefault(others, {})[config["batch"]] = acc
    found = []
    for others, by_batch in groups.items():
        if len(by_batch) < 2:
            continue
        small, large = min(by_batch), max(by_batch)
        drop = by_batch[large] - by_batch[small]
        if drop >= thresholds.bn_batch_drop and not math.isnan(drop):
            found.append(Finding("bn_small_batch", "warning", f"BN at batch {small}: val accuracy {drop * 100:.0f} "
                                 f"points below batch {large} ({others})",
                                 "use norm=gn (or ln), which does not depend on the batch", None, None, drop))
    return found


def as_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]


def as_markdown(findings: list[Finding]) -> str:
    """For TensorBoard's Text tab: one bullet per finding."""
    return "\n".join(f"- **{f.severity}**: {f.text()}" for f in findings)
