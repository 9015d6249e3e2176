"""`diagnose report PATH`: the results of one run or a sweep, as rich tables or JSON."""

import argparse
import json
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from diagnose.console import print_findings
from diagnose.findings import Finding, as_dicts
from diagnose.sweep.runs import RunRecord, find_runs, swept_keys
from diagnose.sweep.summary import METRICS, series_name, sweep_findings, sweep_table

LAYER_COLUMNS = {  # metric prefix in metrics.json "layers" -> column title
    "act_std": "act std",
    "grad_norm": "grad norm",
    "dead": "dead",
    "saturation": "saturated",
    "update_ratio": "update/weight",
    "sign_agreement": "sign agree",
}


def run_table(run: RunRecord) -> Table:
    m = run.metrics
    table = Table(title=f"{run.path}: {run.status}", header_style="bold", show_header=False)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        if (value := run.final(key)) is not None:
            table.add_row(key, f"{value:.4f}")
    for key, fmt in (("steps", "{}"), ("wall_time_s", "{:.1f}"), ("images_per_s", "{:,.0f}")):
        if key in m:
            table.add_row(key, fmt.format(m[key]))
    if m.get("nonfinite"):
        table.add_row("first non-finite", f"step {m['nonfinite']['step']}, {m['nonfinite']['tensor']} of "
                                          f"{m['nonfinite']['layer']}")
    if m.get("error"):
        table.add_row("error", m["error"])
    return table


def layer_table(run: RunRecord) -> Table | None:
    layers: dict[str, dict[str, float]] = run.metrics.get("layers") or {}
    if not layers:
        return None
    table = Table(title="per layer, at the last measurement", header_style="bold")
    table.add_column("layer")
    for title in LAYER_COLUMNS.values():
        table.add_column(title, justify="right")
    for name, values in layers.items():
        table.add_row(name, *(f"{values[k]:.3g}" if k in values else "" for k in LAYER_COLUMNS))
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
                  **{k: r.metrics.get(k) for k in ("final", "steps", "nonfinite", "layers", "findings", "error")}}
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
        findings = runs[0].metrics.get("findings", [])
    else:
        keys = swept_keys(runs)
        console.print(sweep_table(runs, keys, f"sweep {args.path}: {len(runs)} runs"))
        if "batch" in keys:
            console.print(sensitivity_table(runs, keys))
        findings = [{**f, "message": f"{r.path.name}: {f['message']}"} for r in runs
                    for f in r.metrics.get("findings", [])] + as_dicts(sweep_findings(runs))
    print_findings([Finding(**f) for f in findings], console)
