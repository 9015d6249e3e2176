"""The critical batch size of a batch sweep, measured the expensive way, beside each run's gradient noise scale (the
cheap prediction). McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training") show that the steps S and
examples E needed to reach a given loss trade off as

    S / S_min - 1 = (E / E_min - 1)^-1,  that is  S(B) = S_min + E_min / B  (E = S B),

so a least-squares fit of the steps to the target against 1/B gives S_min, E_min and the critical batch
B_crit = E_min / S_min: below it a larger batch saves steps, above it only costs examples. B_simple, measured in
every run, predicts B_crit.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any

from diagnose.findings import about
from diagnose.sweep.runs import RunRecord
from diagnose.sweep.sensitivity import series_name

FIGURE = "critical_batch.png"
RESULT = "critical_batch.json"
MIN_BATCHES = 3  # two parameters to fit, and one point to spare


@dataclass
class Fit:
    s_min: float  # the fewest steps any batch size can reach the target in
    e_min: float  # the fewest examples
    b_crit: float  # E_min / S_min


@dataclass
class Series:
    """One combination of the other swept keys: its steps to the target by batch size, the fit, the noise scale."""

    name: str
    target: float  # the train loss every run of the series reaches: the loosest run's lowest window mean
    steps: dict[int, float] = field(default_factory=dict)  # batch -> steps to the target (mean over seeds)
    # batch -> the run's B_simple when it reached the target (mean over seeds): the noise scale grows as the loss
    # falls, and the critical batch of a target is the one of the loss it names
    b_simple: dict[int, float] = field(default_factory=dict)
    b_simple_low: dict[int, float] = field(default_factory=dict)  # where B_simple was not resolved: its lower bound
    fit: Fit | None = None
    why_no_fit: str = ""

    @property
    def b_simple_median(self) -> float | None:
        values = [v for v in self.b_simple.values() if math.isfinite(v)]
        return median(values) if values else None


def steps_to_target(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first step at which the train loss (log-window means) is at or below `target`, interpolated linearly
    between the logged points; None if it never gets there."""
    before = None
    for step, loss in curve:
        if loss <= target:
            if before is None or before[1] == loss:
                return float(step)
            (step0, loss0) = before
            return step0 + (step - step0) * (loss0 - target) / (loss0 - loss)
        before = (step, loss)
    return None


def at_step(history: list[tuple[int, float, float]], step: float) -> tuple[float, float] | None:
    """(b_simple, b_simple_low) measured last at or before `step` (the first ones, if all came after)."""
    before = [values for at, *values in history if at <= step]
    return tuple(before[-1]) if before else tuple(history[0][1:]) if history else None


def fit_critical_batch(batches: list[float], steps: list[float]) -> Fit:
    """S(B) = S_min + E_min / B by least squares on relative errors (steps span decades). S_min <= 0 (B_crit
    infinite): the steps still halve with every doubling, B_crit is above the range; E_min <= 0 (B_crit <= 0):
    they do not fall at all, it is below."""
    import numpy as np

    b, s = np.asarray(batches, dtype=float), np.asarray(steps, dtype=float)
    design = np.stack([1 / s, 1 / (b * s)], axis=1)  # (S_min + E_min / B) / S = 1
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    return Fit(float(s_min), float(e_min), float(e_min / s_min) if s_min > 0 else math.inf)


def critical_batches(runs: list[RunRecord], keys: list[str]) -> list[Series]:
    """A Series for each combination of the other swept keys with completed runs; fitted where MIN_BATCHES or more
    batch sizes reached its target."""
    grouped: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.status == "completed" and isinstance(run.overrides.get("batch"), int) and run.metrics.train_curve:
            grouped.setdefault(series_name(run, keys), []).append(run)
    found = []
    for name, members in sorted(grouped.items()):
        target = max(min(loss for _, loss in run.metrics.train_curve) for run in members)
        series = Series(name, target)
        by_batch: dict[int, list[RunRecord]] = {}
        for run in members:
            by_batch.setdefault(run.overrides["batch"], []).append(run)
        for batch, group in sorted(by_batch.items()):
            steps, noise, lows = [], [], []
            for run in group:
                reached = steps_to_target(run.metrics.train_curve, target)
                if reached is None:
                    continue
                steps.append(reached)
                b_simple, low = at_step(run.metrics.noise.history, reached) if run.metrics.noise else (None, None)
                if b_simple is not None and math.isfinite(b_simple):
                    noise.append(b_simple)
                elif low is not None and math.isfinite(low):
                    lows.append(low)
            if steps:
                series.steps[batch] = mean(steps)
            if noise:
                series.b_simple[batch] = mean(noise)
            elif lows:
                series.b_simple_low[batch] = min(lows)
        if len(series.steps) < MIN_BATCHES:
            series.why_no_fit = f"fewer than {MIN_BATCHES} batch sizes reached the target"
        else:
            fit = fit_critical_batch(list(series.steps), list(series.steps.values()))
            low, high = min(series.steps), max(series.steps)
            if fit.s_min <= 0:
                series.why_no_fit = f"the steps fall like 1/B over the whole range: B_crit is above {high}, sweep " \
                                    f"larger"
            elif fit.e_min <= 0:
                series.why_no_fit = f"the steps do not fall with the batch: B_crit is below {low}, sweep smaller"
            elif not low / 2 <= fit.b_crit <= 2 * high:  # an extrapolation says little
                side = "smaller" if fit.b_crit < low else "larger"
                series.why_no_fit = (f"the fit puts it at ~{about(fit.b_crit)}, outside the swept batches "
                                     f"{low}-{high}: sweep {side} ones")
            else:
                series.fit = fit
        found.append(series)
    return found


def worth_fitting(found: list[Series]) -> bool:
    """Some series reached its target at MIN_BATCHES batch sizes or more: the fit the figure and the table promise
    can be tried (it may still put B_crit out of range, and say so)."""
    return any(len(series.steps) >= MIN_BATCHES for series in found)


def no_fit_note(runs: list[RunRecord]) -> str:
    """One line for a batch sweep without a critical-batch fit: why there is no figure or table."""
    batches = sorted({run.overrides["batch"] for run in runs if isinstance(run.overrides.get("batch"), int)})
    listed = ", ".join(map(str, batches))
    if len(batches) < MIN_BATCHES:
        return (f"no critical batch: the fit of steps against batch size needs {MIN_BATCHES} batch sizes or more, "
                f"this sweep has {len(batches)} ({listed})")
    return (f"no critical batch: no series reached its target train loss at {MIN_BATCHES} or more of the batch "
            f"sizes ({listed})")


def write_critical_batches(sweep_dir: Path, found: list[Series]) -> None:
    """critical_batch.json, and the figure as critical_batch.png and in TensorBoard (the sweep folder's run)."""
    from torch.utils.tensorboard import SummaryWriter

    from diagnose.diagnostics.writing import write_figure

    (sweep_dir / RESULT).write_text(json.dumps([_as_json(series) for series in found], indent=2))
    with SummaryWriter(str(sweep_dir / "sensitivity")) as writer:
        write_figure(writer, "sensitivity/critical_batch", critical_batch_figure(found), file=sweep_dir / FIGURE)


def _as_json(series: Series) -> dict[str, Any]:
    return {**asdict(series), "b_simple_median": series.b_simple_median}


def critical_batch_figure(found: list[Series]) -> Any:
    """Steps to the target against the batch, log-log: the measured points, the fitted curve, B_crit (dashed) and
    the runs' median B_simple (dotted) marked, one colour per series."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for series in found:
        batches = sorted(series.steps)
        line, = ax.plot(batches, [series.steps[b] for b in batches], "o", label=f"{series.name} (loss <= "
                        f"{series.target:.3g})")
        colour = line.get_color()
        if series.fit is not None:
            grid = np.geomspace(min(batches), max(batches), 100)
            ax.plot(grid, series.fit.s_min + series.fit.e_min / grid, "-", color=colour, alpha=0.7,
                    label=f"fit: B_crit ~ {about(series.fit.b_crit)}")
            ax.axvline(series.fit.b_crit, color=colour, linestyle="--", alpha=0.8)
        if (b_simple := series.b_simple_median) is not None:
            ax.axvline(b_simple, color=colour, linestyle=":", alpha=0.9, label=f"median B_simple ~ {about(b_simple)}")
    from matplotlib.ticker import ScalarFormatter

    batches = sorted({b for series in found for b in series.steps})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("batch size", fontsize=11)
    ax.set_ylabel("steps to the target train loss", fontsize=11)
    drawn = [what for what, shown in (("fit, B_crit dashed", any(series.fit for series in found)),
                                       ("median B_simple dotted", any(series.b_simple_median for series in found)))
             if shown]  # the title names only what is drawn
    ax.set_title("critical batch: steps to the target" + (f" ({'; '.join(drawn)})" if drawn else ""), fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
