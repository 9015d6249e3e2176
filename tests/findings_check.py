"""Does a run's findings' every claim hold in its numbers? Checked against the TensorBoard event files, not
metrics.json: another record of the measurements, read without the findings' code."""

import json
import math
import re
from pathlib import Path

from conftest import scalars

# the closing line's check names -> the series whose presence says the check had data
EVIDENCE = {
    "divergence": ("train/loss", "probe/act_std"),
    "accuracy above chance": ("val/acc", "test/acc"),
    "dead ReLUs": ("dead/", "probe/dead"),
    "saturation": ("saturation/", "probe/saturation"),
    "signal over depth": ("act_std/", "probe/act_std"),
    "update/weight ratio": ("update_ratio/",),
    "centred inputs": ("sign_agreement/",),
    "BN train/eval gap": ("bn/val_acc_train_mode",),
    "batch vs noise scale": ("noise/b_simple",),
    "sharpness": ("curvature/lambda_max",),
    "Jacobian depth scale": ("jacobian/mean_sq",),
}


def _has(series: dict, prefixes: tuple[str, ...]) -> bool:
    return any(tag == p or (p.endswith("/") and tag.startswith(p)) for tag in series for p in prefixes)


def _over_depth(series: dict, metric: str, layers: list[str]) -> list[list[float]]:
    """Each measured step's values of `metric` over `layers` in forward order (steps where all were measured)."""
    by_layer = [dict(series.get(f"{metric}/{name}", [])) for name in layers]
    steps = sorted(set.intersection(*(set(d) for d in by_layer))) if by_layer else []
    return [[d[step] for d in by_layer] for step in steps]


def _depth_ratios(run: dict, series: dict) -> list[float]:
    """Every measured change over depth of the activation std (last / first) and of the output gradient (first /
    last, its size at the input relative to the output)."""
    if run["command"] == "probe":
        stds = [v for _, v in series.get("probe/act_std", [])]
        grads = [v for _, v in series.get("probe/grad_std", [])]
        act_profiles, grad_profiles = [stds], [grads]
    else:
        acts = [name for name, layer in run["layers"].items() if layer.get("role") == "act"]
        act_profiles, grad_profiles = _over_depth(series, "act_std", acts), _over_depth(series, "grad_norm", acts)
    ratios = []
    for profile in act_profiles:
        if len(profile) >= 2 and profile[0] > 0:
            ratios.append(math.inf if not all(map(math.isfinite, profile)) else profile[-1] / profile[0])
    for profile in grad_profiles:
        finite = [v for v in profile if math.isfinite(v)]
        if len(finite) >= 2 and finite[-1] > 0:
            ratios.append(finite[0] / finite[-1])
    return ratios


def _chi(series: dict) -> float | None:
    """The Jacobian's mean squared singular value's growth per layer, from its series against depth."""
    points = series.get("jacobian/mean_sq", [])
    if len(points) < 2 or points[0][1] <= 0 or points[-1][1] <= 0:
        return None
    return (points[-1][1] / points[0][1]) ** (1 / (points[-1][0] - points[0][0]))


def contradictions(run_dir: Path) -> list[str]:
    """What the run's findings claim that its event files do not show."""
    run = json.loads((run_dir / "metrics.json").read_text())
    series = scalars(run_dir)
    limits = run["config"].get("findings", {})
    depth_ratio = limits.get("depth_ratio", 100.0)
    problems = []
    for finding in run["findings"]:
        rule, text = finding["rule"], finding["message"]
        if rule in ("vanishing_signal", "exploding_signal"):
            vanishing = rule == "vanishing_signal"
            # a probe's gradient is seen here through its std, not its norm: a tenth of the threshold
            loose = depth_ratio / 10
            beyond = [r for r in _depth_ratios(run, series) if (r < 1 / loose if vanishing else r > loose)]
            chi = _chi(series)
            chi_says = chi is not None and "χ₁" in text and (chi < 1) == vanishing
            if not beyond and not chi_says:
                problems.append(f"{rule}, but no change over depth beyond {loose:g}x that way: {text}")
        elif rule == "saturation":
            shares = [v for tag, points in series.items() if tag.startswith(("saturation/", "probe/saturation"))
                      for _, v in points]
            if not shares or max(shares) < limits.get("saturation", 0.5):
                problems.append(f"saturation, but at most {max(shares, default=0):.2f} saturated")
        elif rule == "dead_relu":
            shares = [v for tag, points in series.items() if tag.startswith(("dead/", "probe/dead"))
                      for _, v in points]
            if not shares or max(shares) < limits.get("dead", 0.4):
                problems.append(f"dead ReLUs, but at most {max(shares, default=0):.2f} dead")
        elif rule == "did_not_learn":
            acc = (series.get("val/acc") or series.get("test/acc") or [(0, math.nan)])[-1][1]
            if not acc <= 1 / run["classes"] + limits.get("chance_margin", 0.05):
                problems.append(f"did not learn, but accuracy {acc}")
        elif rule == "bn_train_eval_gap":
            train_mode, eval_mode = series.get("bn/val_acc_train_mode"), series.get("val/acc")
            if not train_mode or not eval_mode or abs(train_mode[-1][1] - eval_mode[-1][1]) < limits.get("bn_gap"):
                problems.append("a BN train/eval gap the events do not show")
        elif rule == "sharpness":
            tops, thresholds = dict(series.get("curvature/lambda_max", [])), dict(series.get("curvature/threshold", []))
            if not any(top >= thresholds[step] for step, top in tops.items() if step in thresholds):
                problems.append("sharpness above the threshold the events never show")
        elif rule in ("checks", "no_findings"):
            passed = re.search(r"checks passed - ([^;]*)", text)
            missing = re.search(r"not measured - (.*)$", text)
            for name in passed.group(1).split(", ") if passed else []:
                if name in EVIDENCE and not _has(series, EVIDENCE[name]):
                    problems.append(f"'{name}' passed, but nothing of it was measured")
            for name in re.findall(r"(?:^|, )([^,(]+?) \(", missing.group(1)) if missing else []:
                if name in EVIDENCE and _has(series, EVIDENCE[name]) and name != "divergence":
                    problems.append(f"'{name}' not measured, but its series are in the event files")
    return problems
