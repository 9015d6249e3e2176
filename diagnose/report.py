"""`diagnose report PATH`: the results of one run or a sweep, as rich tables or JSON."""

import argparse
import json
from collections import defaultdict
from dataclasses import asdict, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from diagnose.console import print_findings
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.findings import as_dicts
from diagnose.sweep.runs import RunRecord, find_runs, swept_keys
from diagnose.sweep.sensitivity import series_name
from diagnose.sweep.summary import METRICS, sweep_findings, sweep_table


def columns() -> list[LayerMetric]:
    """The metrics with a column in the layer table, in the metric table's order."""
    return [metric for metric in metric_table.LAYER_METRICS if metric.column]


def run_table(run: RunRecord) -> Table:
    m = run.metrics
    table = Table(title=f"{run.path}: {run.status}", header_style="bold", show_header=False)
    for key, value in asdict(m.final).items():
        if value is not None:
            table.add_row(key, f"{value:.4f}")
    if m.command == "train" and m.status != "failed":
        table.add_row("steps", str(m.steps))
        table.add_row("wall_time_s", f"{m.wall_time_s:.1f}")
        table.add_row("images_per_s", f"{m.images_per_s:,.0f}")
    if m.nonfinite:
        table.add_row("first non-finite", f"step {m.nonfinite.step}, {m.nonfinite.tensor} of {m.nonfinite.layer}")
    if m.error:
        table.add_row("error", m.error)
    return table


def layer_table(run: RunRecord) -> Table | None:
    if not run.metrics.layers:
        return None
    table = Table(title="per layer, at the last measurement", header_style="bold")
    table.add_column("layer")
    shown = columns()
    for metric in shown:
        table.add_column(metric.column, justify="right")
    for name, record in run.metrics.layers.items():
        table.add_row(name, *(f"{record.values[m.name]:.3g}" if m.name in record.values else "" for m in shown))
    return table


def sensitivity_table(runs: list[RunRecord], keys: list[str], metric: str = "val_acc") -> Table:
    """Final `metric` with one row per combination of the other swept keys and one column per batch size."""
    others = [k for k in keys if k != "batch"]
    cells: dict[str, dict[int, float]] = defaultdict(dict)
    for run in runs:
        value = METRICS[metric](run)
        if run.status == "completed" and value is not None and isinstance(run.overrides.get("batch"), int):
            cells[series_name(run, others)][run.overrides["batch"]] = value
    batches = sorted({b for row in cells.values() for b in row})
    table = Table(title=f"batch-size sensitivity: final {metric}", header_style="bold")
    table.add_column(",".join(others) or "runs")
    for batch in batches:
        table.add_column(f"batch={batch}", justify="right")
    for series, row in sorted(cells.items()):
        table.add_row(series, *(f"{row[b]:.4f}" if b in row else "-" for b in batches))
    return table


def as_json(runs: list[RunRecord]) -> dict[str, Any]:
    return {
        "swept": swept_keys(runs) if len(runs) > 1 else [],
        "sweep_findings": as_dicts(sweep_findings(runs)) if len(runs) > 1 else [],
        "runs": [{"path": str(r.path), "status": r.status, "overrides": r.overrides,
                  **{k: r.metrics.to_json()[k] for k in ("final", "steps", "nonfinite", "layers", "findings", "error")}}
                 for r in runs],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="diagnose report",
                                     description="Show the results of a run folder or a sweep folder.")
    parser.add_argument("path", help="outputs/<date>/<time> (a run) or outputs/multirun/<date>/<time> (a sweep)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    args = parser.parse_args(argv)
    runs = find_runs(args.path)
    if args.json:
        print(json.dumps(as_json(runs), indent=2))
        return
    console = Console()
    if len(runs) == 1:
        console.print(run_table(runs[0]))
        if (table := layer_table(runs[0])) is not None:
            console.print(table)
        findings = runs[0].metrics.findings
    else:
        keys = swept_keys(runs)
        console.print(sweep_table(runs, keys, f"sweep {args.path}: {len(runs)} runs"))
        if "batch" in keys:
            console.print(sensitivity_table(runs, keys))
        findings = [replace(f, message=f"{r.path.name}: {f.message}") for r in runs for f in r.metrics.findings]
        findings += sweep_findings(runs)
    print_findings(findings, console, log=False)
