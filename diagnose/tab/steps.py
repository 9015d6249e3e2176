"""Over steps, only what is read over time: loss and accuracy, dead and saturated fractions, λ_max against its
stability threshold, the gradient noise scale. Every point, unsmoothed; a colour per line, per layer, or per job
of a sweep, whose x axis is the epoch where its jobs differ in steps per epoch (a batch sweep)."""

from dataclasses import dataclass

from diagnose.diagnostics.metrics import metric_of
from diagnose.results import RunMetrics
from diagnose.sweep.runs import swept_keys
from diagnose.sweep.sensitivity import setting
from diagnose.tab.charts import LINEAR, LOG, Chart, Series
from diagnose.tab.events import Events, Points, layer_of
from diagnose.tab.targets import PROBE, SWEEP, Target, job_ids


@dataclass(frozen=True)
class Line:
    tag: str
    label: str
    group: str = ""  # its colour (default: its label); a second reading of the same quantity shares it, dashed
    dash: bool = False
    in_sweep: bool = False  # drawn for each job of a sweep, a colour per setting: the chart's first such line
    # solid, the others dashed


@dataclass(frozen=True)
class OverSteps:
    title: str
    y_label: str
    lines: tuple[Line, ...] = ()
    per_layer: str | None = None  # a per-layer metric: a line per layer (a single run only)
    y_scale: str = LINEAR
    y_range: tuple[float, float] | None = None
    chance: bool = False  # an accuracy: chance (1 / classes) drawn across it


SHARE = (0.0, 1.0)

CHARTS = (
    OverSteps("loss", "loss", (Line("train/loss", "train", in_sweep=True), Line("val/loss", "val", in_sweep=True),
                               Line("test/loss", "test")), y_scale=LOG),  # a first step's loss can be 100x the rest
    OverSteps("accuracy", "accuracy", (Line("train/acc", "train", in_sweep=True), Line("val/acc", "val", in_sweep=True),
                                       Line("bn/val_acc_train_mode", "val, BN on batch statistics (train mode)",
                                            group="val", dash=True),
                                       Line("test/acc", "test")), chance=True),
    OverSteps("", "share of units", per_layer="dead", y_range=SHARE),
    OverSteps("", "share of outputs", per_layer="saturation", y_range=SHARE),
    OverSteps("sharpness λ_max against the stability threshold 2(1+momentum)/lr", "curvature",
              (Line("curvature/lambda_max", "λ_max", in_sweep=True),
               Line("curvature/threshold", "2(1+momentum)/lr", group="λ_max", dash=True, in_sweep=True)),
              y_scale=LOG),
    OverSteps("gradient noise scale B_simple against the batch size", "examples",
              (Line("noise/b_simple", "B_simple", in_sweep=True),
               Line("noise/b_simple_low", "B_simple at least (|G|² still within its noise)", group="B_simple",
                    dash=True),
               Line("noise/batch", "batch", dash=True)), y_scale=LOG),
)


def steps_charts(target: Target, events: Events) -> list[Chart]:
    if target.kind == PROBE or (target.kind == SWEEP and target.probes):
        return []
    if target.kind != SWEEP:
        tags = events.tags([target.id]).get(target.id, [])
        wanted = [tag for tag in tags if any(tag == line.tag for chart in CHARTS for line in chart.lines)
                  or ((parsed := layer_of(tag)) and any(parsed[0] == chart.per_layer for chart in CHARTS))]
        series = events.read([target.id], wanted).get(target.id, {})
        return [chart for spec in CHARTS if (chart := run_chart(spec, series, target.runs[0].metrics.classes))]
    # a sweep's jobs draw fixed tags, no per-layer ones: read without listing every tag of every job
    ids = job_ids(target)
    data = events.read(ids, sorted({line.tag for chart in CHARTS for line in chart.lines if line.in_sweep}))
    by_epoch = len({run.metrics.steps / run.metrics.epochs for run in target.runs if run.metrics.epochs}) > 1
    keys = swept_keys(target.runs)
    jobs = [(run.path.name, setting(run, keys), run.metrics, data.get(run_id, {}))
            for run, run_id in zip(target.runs, ids, strict=True)]
    return [chart for spec in CHARTS if (chart := sweep_chart(spec, jobs, by_epoch))]


def run_chart(spec: OverSteps, series: dict[str, Points], classes: int | None) -> Chart | None:
    found = []
    if spec.per_layer:
        layers = sorted((parsed[1], parsed[2], points) for tag, points in series.items()
                        if (parsed := layer_of(tag)) and parsed[0] == spec.per_layer)
        found = [Series(f"{depth:02d} {name}", name, *_xy(points)) for depth, name, points in layers]
    for line in spec.lines:
        if line.tag in series:
            found.append(Series(line.label, line.group or line.label, *_xy(series[line.tag]), dash=line.dash))
    if not found:
        return None
    found += _chance(spec, found, classes)
    return Chart(_title(spec), "step", spec.y_label, found, y_scale=spec.y_scale, y_range=spec.y_range)


def sweep_chart(spec: OverSteps, jobs: list[tuple[str, str, RunMetrics, dict[str, Points]]],
                by_epoch: bool) -> Chart | None:
    """A line per job, a colour per setting (its seeds share one)."""
    lines = [line for line in spec.lines if line.in_sweep]
    found = []
    for name, group, metrics, series in jobs:
        per_epoch = metrics.epochs / metrics.steps if by_epoch and metrics.steps else 1.0
        for line in lines:
            if line.tag in series:
                x, y = _xy(series[line.tag])
                label = name if len(lines) == 1 else f"{name}: {line.label}"
                found.append(Series(label, group, [step * per_epoch for step in x], y, dash=line is not lines[0]))
    if not any(len(series.x) > 1 for series in found):  # one point a job (a single evaluation): no curve to read
        return None
    found += _chance(spec, found, next((metrics.classes for _, _, metrics, _ in jobs if metrics.classes), None))
    title = _title(spec) if len(lines) > 1 else f"{_title(spec)}: {lines[0].label}"
    return Chart(title, "epoch" if by_epoch else "step", spec.y_label, found, y_scale=spec.y_scale,
                 y_range=spec.y_range)


def _chance(spec: OverSteps, found: list[Series], classes: int | None) -> list[Series]:
    """Chance accuracy across an accuracy chart: what a net that did not learn reads."""
    if not spec.chance or not classes:
        return []
    xs = [x for series in found for x in series.x]
    return [Series(f"chance (1/{classes})", "chance", [min(xs), max(xs)], [1 / classes] * 2, dash=True,
                   reference=True)]


def _xy(points: Points) -> tuple[list[float], list[float | None]]:
    return [step for step, _ in points], [value for _, value in points]


def _title(spec: OverSteps) -> str:
    return spec.title or metric_of(spec.per_layer).title
