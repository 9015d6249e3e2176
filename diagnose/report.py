"""`diagnose report PATH`: the results of one run or a sweep, as rich tables or JSON."""

import argparse
import json
import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diagnose.console import line, print_findings, print_tables
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.errors import UserError
from diagnose.files import CHECKPOINT_FILE, METRICS_FILE
from diagnose.findings import as_dicts
from diagnose.sweep.runs import RunRecord, find_runs, swept_keys
from diagnose.sweep.sensitivity import series_name
from diagnose.sweep.summary import METRICS, cell, report_findings, sweep_findings, sweep_table

TRAINED = ("completed", "diverged", "interrupted")  # the statuses of a run that has steps to count


def columns() -> list[LayerMetric]:
    """The metrics with a column in the layer table, in the metric table's order."""
    return [metric for metric in metric_table.LAYER_METRICS if metric.column]


def run_table(run: RunRecord) -> Table:
    m = run.metrics
    table = Table(header_style="bold", show_header=False)
    for key, value in asdict(m.final).items():
        if value is not None:
            table.add_row(key, "-" if not math.isfinite(value) else f"{value:.4f}")
    if m.command == "train" and m.status in TRAINED:
        table.add_row("steps", str(m.steps))
        table.add_row("wall_time_s", f"{m.wall_time_s:.1f}")
        table.add_row("images_per_s", f"{m.images_per_s:,.0f}")
    if m.nonfinite:
        table.add_row("first non-finite", f"step {m.nonfinite.step}, {m.nonfinite.tensor} of {m.nonfinite.layer}")
    return table


def layer_table(run: RunRecord) -> Table | None:
    """The last value of each metric per layer, a column for each metric some layer has."""
    layers = run.metrics.layers
    if not layers:
        return None
    table = Table(title="per layer, at the last measurement", header_style="bold")
    table.add_column("layer")
    shown = [m for m in columns() if any(m.name in record.values for record in layers.values())]
    for metric in shown:
        table.add_column(metric.column, justify="right")
    for name, record in layers.items():
        table.add_row(name, *(f"{record.values[m.name]:.3g}" if m.name in record.values else "" for m in shown))
    return table


def sensitivity_table(runs: list[RunRecord], keys: list[str], metric: str = "val_acc") -> Table:
    """Final `metric` with one row per combination of the other swept keys and one column per batch size."""
    others = [k for k in keys if k != "batch"]
    cells: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for run in runs:
        if run.status == "completed" and METRICS[metric](run) is not None and isinstance(run.overrides.get("batch"),
                                                                                          int):
            cells[series_name(run, others)][run.overrides["batch"]] = run
    batches = sorted({b for row in cells.values() for b in row})
    table = Table(title=f"final {metric} by batch size", header_style="bold")
    table.add_column(escape(",".join(others)) or "runs")
    for batch in batches:
        table.add_column(f"batch={batch}", justify="right")
    for series, row in sorted(cells.items()):
        table.add_row(escape(series), *(cell(row[b], metric) if b in row else "-" for b in batches))
    return table


def as_json(runs: list[RunRecord]) -> dict[str, Any]:
    return {
        "swept": swept_keys(runs) if len(runs) > 1 else [],
        "sweep_findings": as_dicts(sweep_findings(runs)) if len(runs) > 1 else [],
        "runs": [{"path": str(r.path), "status": r.status, "overrides": r.overrides,
                  **{k: r.metrics.to_json()[k] for k in ("final", "steps", "nonfinite", "layers", "findings", "error")}}
                 for r in runs],
    }


def run_folder(path: Path) -> Path:
    """The folder to report: a run's own file (RUN/metrics.json, as tab completion offers it) stands for its run."""
    if path.is_file() and path.name in (METRICS_FILE, CHECKPOINT_FILE):
        return path.parent
    if path.is_file():
        raise UserError(f"{path} is a file; diagnose report reads a run folder (outputs/<date>/<time>, the folder "
                        f"that holds {METRICS_FILE}) or a sweep folder (outputs/multirun/<date>/<time>).")
    return path


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="diagnose report",
                                     description="Show the results of a run folder or a sweep folder.")
    parser.add_argument("path", help="outputs/<date>/<time> (a run) or outputs/multirun/<date>/<time> (a sweep)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    args = parser.parse_args(argv)
    runs = find_runs(run_folder(Path(args.path)))
    if args.json:
        print(json.dumps(as_json(runs), indent=2))
        return
    console = Console()
    if len(runs) == 1:
        (run,) = runs
        line(console, escape(f"run {run.path}: {run.status}"))  # a folder to copy: a line of its own, never cut
        if (table := run_table(run)).row_count:
            console.print(table)
        if (table := layer_table(run)) is not None:
            print_tables(table, console)
        findings = run.metrics.findings
    else:
        keys = swept_keys(runs)
        line(console, escape(f"sweep {args.path}: {len(runs)} runs"))
        print_tables(sweep_table(runs, keys, "runs"), console, keys=1 + len(keys))
        if "batch" in keys:
            print_tables(sensitivity_table(runs, keys), console)
        findings = report_findings(runs, sweep_findings(runs))
    for run in runs:  # what went wrong with a run, whole: it may end in the resume= command to copy
        if run.metrics.error:
            where = f"{run.path.name}: " if len(runs) > 1 else ""  # its status is in the table above
            line(console, escape(f"{where}{run.metrics.error}"))
    print_findings(findings, console, log=False)
