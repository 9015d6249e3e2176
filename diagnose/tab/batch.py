"""A batch sweep against its batch size, on a log2 axis: the final accuracy and train loss, a colour per series (the
other swept keys, sweep/sensitivity.py), through the mean over seeds with their range; BN's val accuracy on batch
statistics (train mode) against running ones (eval mode); and the critical batch, where a series spans enough batch
sizes to fit it (sweep/critical_batch.py)."""

from collections.abc import Callable
from statistics import mean

from diagnose.sweep.critical_batch import MIN_BATCHES, critical_batches
from diagnose.sweep.critical_batch import Series as BatchSeries
from diagnose.sweep.runs import RunRecord, swept_keys
from diagnose.sweep.sensitivity import Points, points
from diagnose.tab.charts import LOG, LOG2, Chart, Mark, Series
from diagnose.tab.targets import SWEEP, Target

BATCH = "batch"
FIT_POINTS = 50  # the fitted curve, evenly spaced on the log axis


def batch_charts(target: Target) -> list[Chart]:
    """None for anything but a sweep of the batch size."""
    runs = target.runs
    keys = swept_keys(runs)
    if target.kind != SWEEP or target.probes or BATCH not in keys:
        return []
    charts = []
    for name, what in (("val_acc", "final val accuracy"), ("train_loss", "final train loss")):
        found = points(runs, keys, lambda run, name=name: run.final(name))
        if found:
            charts.append(Chart(f"{what} against batch size", "batch size", what, band_series(found), x_scale=LOG2,
                                note="each line through the mean over seeds; shaded: their range"))
    if modes := bn_modes(runs, keys):
        charts.append(modes)
    fitted = [series for series in critical_batches(runs, keys) if len(series.steps) >= MIN_BATCHES]
    if fitted:
        charts.append(critical_batch_chart(fitted))
    return charts


def band_series(found: Points, dash: bool = False, suffix: str = "") -> list[Series]:
    """A series per combination of the other swept keys: the mean over seeds, their range where there are several."""
    series = []
    for name, by_batch in sorted(found.items()):
        batches = sorted(by_batch)
        spread = any(len(by_batch[b]) > 1 for b in batches)
        series.append(Series(f"{name}{suffix}", name, batches, [mean(by_batch[b]) for b in batches], dash=dash,
                             low=[min(by_batch[b]) for b in batches] if spread else None,
                             high=[max(by_batch[b]) for b in batches] if spread else None))
    return series


def bn_modes(runs: list[RunRecord], keys: list[str]) -> Chart | None:
    """Val accuracy at the last evaluation with BN on running statistics (eval mode, how the net is used) and on the
    batch's own (train mode), for the series that measured both."""
    def at_last(read: Callable) -> Callable[[RunRecord], float | None]:
        def value(run: RunRecord) -> float | None:
            last = run.metrics.last_evaluation
            return None if last is None or last.val_acc_bn_train_mode is None else read(last)
        return value

    train_mode = points(runs, keys, at_last(lambda last: last.val_acc_bn_train_mode))
    if not train_mode:
        return None
    eval_mode = points(runs, keys, at_last(lambda last: last.val_acc))
    return Chart("BN: val accuracy in eval mode (running statistics) vs train mode (the batch's)", "batch size",
                 "val accuracy", [*band_series(eval_mode, suffix=": eval mode"),
                                  *band_series(train_mode, dash=True, suffix=": train mode")], x_scale=LOG2,
                 note="solid: eval mode, as the net is used; dashed: train mode, each batch normalised by itself")


def critical_batch_chart(found: list[BatchSeries]) -> Chart:
    """Steps to each series' target loss against the batch, the fit S(B) = S_min + E_min / B, B_crit (dashed) and
    the runs' median B_simple (dotted)."""
    series, marks = [], []
    for s in found:
        batches = sorted(s.steps)
        series.append(Series(f"{s.name}: steps to loss {s.target:.3g}", s.name, batches, [s.steps[b] for b in batches]))
        if s.fit is not None:
            low, high = batches[0], batches[-1]
            grid = [low * (high / low) ** (i / (FIT_POINTS - 1)) for i in range(FIT_POINTS)]
            series.append(Series(f"{s.name}: fit", s.name, grid, [s.fit.s_min + s.fit.e_min / b for b in grid],
                                 dash=True))
            marks.append(Mark(s.fit.b_crit, f"{s.name}: B_crit ~ {s.fit.b_crit:.3g}", s.name))
        if (b_simple := s.b_simple_median) is not None:
            marks.append(Mark(b_simple, f"{s.name}: median B_simple ~ {b_simple:.3g}", s.name, style="dotted"))
    notes = [f"{s.name}: {s.why_no_fit}" for s in found if s.fit is None]
    return Chart("critical batch: steps to the target train loss (fit dashed, B_crit dashed, B_simple dotted)",
                 "batch size", "steps", series, x_scale=LOG2, y_scale=LOG, marks=marks, note="; ".join(notes))
