"""Batch-size sensitivity of a sweep: its final metrics against the batch size, one series per combination of the
other swept keys (seeds averaged), as TensorBoard scalars with their own Custom Scalars layout and as a figure on a
log2 batch axis. The layout's charts are Custom Scalars' margin charts (the mean, and the seeds' range as a band):
TensorBoard smooths a line chart (0.6 by default, which draws a 2-point line's second point 0.375 of the way back to
the first), never a margin chart; and a band's edges count three times in its outlier clipping, so the end of a
short line stays on the chart."""

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from diagnose.sweep.runs import RunRecord

SENSITIVITY_DIR = "sensitivity"
FIGURE = "sensitivity.png"
SEED = "seed"  # a swept seed is spread, not a series of its own

Points = dict[str, dict[int, list[float]]]  # series -> batch -> one value per seed


def series_name(run: RunRecord, keys: list[str]) -> str:
    """`norm=gn` for the keys other than batch and seed; one series per combination of them."""
    return ",".join(f"{k}={run.overrides.get(k)}" for k in keys if k not in ("batch", SEED)) or "all"


def setting(run: RunRecord, keys: list[str]) -> str:
    """`batch=2,norm=gn` for the swept keys other than the seed: the runs of one setting differ only by their seed."""
    return ",".join(f"{k}={run.overrides.get(k)}" for k in keys if k != SEED) or run.path.name


def points(runs: list[RunRecord], keys: list[str], read: Callable[[RunRecord], float | None]) -> Points:
    """The metric `read` of each completed run, by series and batch size."""
    found: Points = defaultdict(lambda: defaultdict(list))
    for run in runs:
        value, batch = read(run), run.overrides.get("batch")
        if run.status == "completed" and isinstance(batch, int) and value is not None and math.isfinite(value):
            found[series_name(run, keys)][batch].append(value)
    return found


def write_sensitivity(sweep_dir: Path, runs: list[RunRecord], keys: list[str],
                      metrics: dict[str, Callable[[RunRecord], float | None]]) -> None:
    """Scalars sensitivity/<metric> with the batch size as the step, one TensorBoard run per series (the mean over
    seeds; <metric>_min and _max their range), the layout that charts them, and the figure, also saved as
    sensitivity.png in the sweep folder."""
    from torch.utils.tensorboard import SummaryWriter

    from diagnose.diagnostics.writing import write_figure

    by_metric = {name: points(runs, keys, read) for name, read in metrics.items()}
    by_metric = {name: found for name, found in by_metric.items() if found}
    for series in sorted({series for found in by_metric.values() for series in found}):
        with SummaryWriter(str(sweep_dir / SENSITIVITY_DIR / series)) as writer:
            for name, found in by_metric.items():
                for batch, values in sorted(found.get(series, {}).items()):
                    writer.add_scalar(f"sensitivity/{name}", mean(values), batch)
                    writer.add_scalar(f"sensitivity/{name}_min", min(values), batch)
                    writer.add_scalar(f"sensitivity/{name}_max", max(values), batch)
    if not by_metric:
        return
    with SummaryWriter(str(sweep_dir / SENSITIVITY_DIR)) as writer:
        writer.add_custom_scalars({"batch-size sensitivity (x: batch size)": {
            f"final {name} against batch size (band: the seeds' range)": [
                "Margin", [f"sensitivity/{name}", f"sensitivity/{name}_min", f"sensitivity/{name}_max"]]
            for name in by_metric}})
        folder = sweep_dir.resolve()
        write_figure(writer, "sensitivity/figure", sensitivity_figure(by_metric, f"{folder.parent.name}/{folder.name}"),
                     file=sweep_dir / FIGURE)


def sensitivity_figure(by_metric: dict[str, Points], title: str) -> Any:
    """A panel per metric: the final value against the batch size (log2 axis), a line per series through the mean
    over seeds, the seeds' range shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [name for name in ("val_acc", "test_acc", "train_loss", "bn_train_eval_gap") if name in by_metric]
    fig = Figure(figsize=(5 * len(shown), 4.2), dpi=90)
    FigureCanvasAgg(fig)
    for ax, name in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
        batches = sorted({b for found in by_metric[name].values() for b in found})
        for series, found in sorted(by_metric[name].items()):
            xs = sorted(found)
            line, = ax.plot(xs, [mean(found[b]) for b in xs], marker="o", label=series)
            if any(len(found[b]) > 1 for b in xs):
                ax.fill_between(xs, [min(found[b]) for b in xs], [max(found[b]) for b in xs],
                                color=line.get_color(), alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size", fontsize=11)
        ax.set_title(f"final {name}", fontsize=13)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10)
    fig.suptitle(f"batch-size sensitivity: {title}", fontsize=14)
    fig.tight_layout()
    return fig
