"""Rules that turn statistics into plain-language findings: what is wrong, the evidence, the remedy.

Every rule reads what a run stores in metrics.json (or a sweep's runs): nothing but the stored numbers.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from diagnose.config import Thresholds


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
        return f"{self.message} - {self.remedy}"


def _act_layers(layers: dict[str, dict[str, float]], metric: str) -> list[tuple[str, float]]:
    """(layer, value) of the activation outputs that have `metric`, in forward order."""
    return [(name, v[metric]) for name, v in layers.items() if name.endswith(".act") and metric in v]


def _times(ratio: float) -> str:
    return f"{ratio:.0e}x" if ratio >= 1000 else f"{ratio:.0f}x"


def dead_relus(m: dict, t: Thresholds) -> list[Finding]:
    found = []
    for name, values in m.get("layers", {}).items():
        dead = values.get("dead")
        if dead is None or dead < t.dead:
            continue
        history = m.get("dead_history", {}).get(name, [])
        since = next((step for step, fraction in history if fraction >= t.dead), None)
        when = f" from step {since}" if since is not None else ""
        found.append(Finding("dead_relu", "warning", f"layer {name}: {dead:.0%} dead ReLU units{when}",
                             "lower the learning rate, use leaky_relu, or kaiming init", name, since, dead))
    return found


def saturation(m: dict, t: Thresholds) -> list[Finding]:
    return [Finding("saturation", "warning", f"layer {name}: {value:.0%} of outputs saturated, where the "
                    f"gradient through them is nearly zero",
                    "use smaller initial weights (xavier), a non-saturating activation (relu), or normalisation",
                    name, m.get("steps"), value)
            for name, values in m.get("layers", {}).items()
            if (value := values.get("saturation")) is not None and value >= t.saturation]


def signal_over_depth(m: dict, t: Thresholds) -> list[Finding]:
    found = []
    stds = _act_layers(m.get("layers", {}), "act_std")
    if len(stds) >= 2 and stds[0][1] > 0:
        ratio = max(stds[-1][1] / stds[0][1], 1e-300)  # a signal that vanished to exactly 0 is still "vanishing"
        span = f"over {len(stds)} layers ({stds[0][0]} to {stds[-1][0]})"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_activations", "warning",
                                 f"activation std falls {_times(1 / ratio)} {span} - vanishing signal",
                                 "the init std is too small for the depth: use kaiming_normal (relu) or "
                                 "xavier_normal (tanh), or add normalisation", stds[-1][0], m.get("steps"), ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_activations", "warning",
                                 f"activation std grows {_times(ratio)} {span} - exploding signal",
                                 "the init std is too large for the depth: use kaiming_normal (relu) or "
                                 "xavier_normal (tanh), or add normalisation", stds[-1][0], m.get("steps"), ratio))
    grads = _act_layers(m.get("layers", {}), "grad_norm")
    if len(grads) >= 2 and grads[-1][1] > 0:
        ratio = max(grads[0][1] / grads[-1][1], 1e-300)  # first layer's gradient relative to the last one's
        span = f"from {grads[-1][0]} back to {grads[0][0]}"
        if ratio < 1 / t.depth_ratio:
            found.append(Finding("vanishing_gradients", "warning",
                                 f"gradient norm falls {_times(1 / ratio)} {span} - early layers hardly learn",
                                 "use a non-saturating activation, kaiming init, normalisation or residual paths",
                                 grads[0][0], m.get("steps"), ratio))
        elif ratio > t.depth_ratio:
            found.append(Finding("exploding_gradients", "warning", f"gradient norm grows {_times(ratio)} {span}",
                                 "lower the init scale or the learning rate, clip gradients (clip=norm)",
                                 grads[0][0], m.get("steps"), ratio))
    return found


def _over_run(m: dict, metric: str) -> dict[str, float]:
    """{layer: value} of a metric: its mean over the run where there is one, else the last measurement."""
    means = {tag.split("/", 1)[1]: v for tag, v in m.get("run_means", {}).items() if tag.startswith(f"{metric}/")}
    return means or {name: v[metric] for name, v in m.get("layers", {}).items() if metric in v}


def update_ratio(m: dict, t: Thresholds) -> list[Finding]:
    ratios = [v for v in _over_run(m, "update_ratio").values() if v]
    if not ratios:
        return []
    typical = median(ratios)
    if typical > t.update_ratio_high:
        return [Finding("update_ratio_high", "warning", f"updates are {typical:.1e} of the weights per step "
                        f"(median over layers; healthy is about 1e-3)", "lower the learning rate",
                        None, m.get("steps"), typical)]
    if typical < t.update_ratio_low:
        return [Finding("update_ratio_low", "warning", f"updates are only {typical:.1e} of the weights per step "
                        f"(median over layers; healthy is about 1e-3)", "raise the learning rate",
                        None, m.get("steps"), typical)]
    return []


def divergence(m: dict, t: Thresholds) -> list[Finding]:
    nonfinite = m.get("nonfinite")
    if not nonfinite:
        return []
    where = "the loss" if nonfinite["layer"] == "loss" else f"the {nonfinite['tensor']} of layer {nonfinite['layer']}"
    return [Finding("divergence", "error", f"training diverged: the first NaN/Inf appeared at step "
                    f"{nonfinite['step']} in {where}",
                    "lower the learning rate, clip gradients (clip=norm), or add normalisation",
                    nonfinite["layer"], nonfinite["step"])]


def non_centred_inputs(m: dict, t: Thresholds) -> list[Finding]:
    # fully connected layers only: a conv kernel's few weights see neighbouring pixels, which move together
    # whatever the inputs' mean, so their signs agree anyway
    weights = [(name, v) for name, v in _over_run(m, "sign_agreement").items() if name.endswith(".linear")]
    if not weights or weights[0][1] < t.sign_agreement:
        return []
    name, value = weights[0]
    centred = m.get("config", {}).get("data", {}).get("center", True)
    cause = "the inputs are not zero-centred (data.center=false)" if not centred else "the layer's inputs share a sign"
    return [Finding("non_centred_inputs", "warning", f"layer {name}: weight gradients agree in sign ({value:.2f} "
                    f"on average; balanced is near 0) - {cause}, so updates zig-zag",
                    "centre the inputs (data.center=true) or use a zero-centred activation before this layer",
                    name, m.get("steps"), value)]


def symmetry(m: dict, t: Thresholds) -> list[Finding]:
    return [Finding("zero_init_symmetry", "error", f"layer {name}: all units have identical weights and get "
                    f"identical gradients - the symmetry never breaks, the layer acts as one unit",
                    "use a random init (kaiming_normal, xavier_normal), not zeros", name)
            for name in m.get("symmetric_layers", [])]


def bn_train_eval_gap(m: dict, t: Thresholds) -> list[Finding]:
    last = (m.get("history") or [{}])[-1]
    if "val_acc_bn_train_mode" not in last:
        return []
    gap = last["val_acc_bn_train_mode"] - last["val_acc"]
    if abs(gap) < t.bn_gap:
        return []
    lower = "eval mode (running statistics)" if gap > 0 else "train mode (batch statistics)"
    return [Finding("bn_train_eval_gap", "warning", f"BatchNorm: val accuracy is {abs(gap) * 100:.0f} points lower "
                    f"in {lower} than in the other mode - train and test see differently normalised inputs",
                    "use a larger batch, or a batch-independent norm (norm=gn or norm=ln)",
                    None, last.get("step"), gap)]


RUN_RULES: list[Callable[[dict, Thresholds], list[Finding]]] = [
    divergence, symmetry, dead_relus, saturation, signal_over_depth, update_ratio, non_centred_inputs,
    bn_train_eval_gap,
]


def run_findings(metrics: dict[str, Any], thresholds: Thresholds) -> list[Finding]:
    return [finding for rule in RUN_RULES for finding in rule(metrics, thresholds)]


def bn_small_batch(runs: list[Any], thresholds: Thresholds) -> list[Finding]:
    """In a sweep over batch sizes: BN runs whose val accuracy at the smallest batch is far below the largest."""
    groups: dict[str, dict[int, float]] = {}
    for run in runs:
        config = run.metrics.get("config", {})
        acc = run.final("val_acc")
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
