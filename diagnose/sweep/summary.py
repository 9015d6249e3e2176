"""What a sweep shows: batch-size sensitivity curves, an HParams table, summary.csv and a terminal table."""

import csv
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diagnose.config import Thresholds
from diagnose.console import console as shared_console
from diagnose.console import line, print_findings, print_tables
from diagnose.files import FINDINGS_JSON, SUMMARY_CSV
from diagnose.findings import SEVERITIES, Finding, about, as_dicts, as_markdown, bn_small_batch
from diagnose.sweep.critical_batch import Series, critical_batches, no_fit_note, worth_fitting, write_critical_batches
from diagnose.sweep.runs import RunRecord, find_runs, swept_keys
from diagnose.sweep.sensitivity import SENSITIVITY_DIR, write_sensitivity

# name -> how to read it from a run; the sensitivity curves and the HParams metrics
METRICS = {
    "val_acc": lambda r: r.final("val_acc"),
    "test_acc": lambda r: r.final("test_acc"),
    "train_loss": lambda r: r.final("train_loss"),
    "bn_train_eval_gap": lambda r: r.metrics.bn_train_eval_gap,
    "loss_at_init": lambda r: r.final("loss"),  # diagnose probe
    "b_simple": lambda r: None if r.metrics.noise is None else r.metrics.noise.b_simple,  # gradient noise scale
}


def measured(runs: list[RunRecord]) -> list[str]:
    """The METRICS some run of the sweep has: a probe sweep has no accuracies, a train sweep no loss at init."""
    return [name for name, read in METRICS.items() if any(read(run) is not None for run in runs)]


def _lr(run: RunRecord) -> str:
    """The learning rate the run trained at (lr scaled for its batch size)."""
    return "" if run.metrics.lr is None else f"{run.metrics.lr:.4g}"


def cell(run: RunRecord, name: str) -> str:
    """A run's METRICS[name] for a table, as the rest of diagnose writes it: B_simple as the findings say it (~two
    digits), the rest to 4 decimals; "-" where there is none or it is not finite (a diverged run's loss), and an
    unresolved B_simple by its lower bound."""
    value = METRICS[name](run)
    if name == "b_simple" and value is not None and math.isnan(value):
        low = run.metrics.noise.b_simple_low
        return f">= {about(low)}" if math.isfinite(low) and low > 0 else "not resolved"
    if value is None or not math.isfinite(value):
        return "-"
    return about(value) if name == "b_simple" else f"{value:.4f}"


def _order(value: object) -> tuple:
    """Numbers by value, then the rest by text: batch 4 before 16."""
    return (0, value, "") if isinstance(value, int | float) and not isinstance(value, bool) else (1, 0, str(value))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_text(values: list[int]) -> Callable[[int], str]:
    """Whole numbers as text padded to one width: HParams shows every number as a double to 5 digits (batch 16
    as 16.000), and sorts text as text; padded with spaces, which the page does not show, 4 sorts before 16."""
    width = max(len(str(v)) for v in values)
    return lambda value: f"{value:>{width}}"


def write_hparams(runs: list[RunRecord], keys: list[str]) -> None:
    """One HParams row per job, written into the job's own folder: SummaryWriter.add_hparams would open a
    new timestamped sub-run for every call (pytorch #32651)."""
    from torch.utils.tensorboard import SummaryWriter  # here, not above: `diagnose report` reads without torch
    from torch.utils.tensorboard.summary import hparams

    domains = {k: sorted({r.overrides[k] for r in runs if k in r.overrides}, key=_order) for k in keys}
    whole = {k: _as_text(v) for k, v in domains.items() if all(_is_int(x) for x in v)}
    domains.update({k: [text(x) for x in v] for k, v in domains.items() if (text := whole.get(k))})
    # a discrete domain must hold one type (hparams refuses [0.1, 1]); mixed ones are left continuous
    discrete = {k: v for k, v in domains.items() if len({type(x) for x in v}) == 1
                and (isinstance(v[0], str | bool) or len(v) < 10)}
    for run in runs:
        params = {k: whole[k](run.overrides[k]) if k in whole else run.overrides[k]
                  for k in keys if k in run.overrides}
        params["status"] = run.status
        if run.metrics.lr is not None:
            params["lr_effective"] = run.metrics.lr  # what it trained at: lr scaled for the batch size
        metrics = {f"hparam/{m}": read(run) for m, read in METRICS.items() if read(run) is not None}
        experiment, start, end = hparams(params, metrics, {**discrete, "status": ["completed", "diverged",
                                                                                   "interrupted", "failed"]})
        with SummaryWriter(str(run.path)) as writer:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, 0)


def write_csv(path: Path, runs: list[RunRecord], keys: list[str]) -> None:
    shown = measured(runs)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "status", *keys, "lr_effective", *shown])
        for run in runs:
            values = [METRICS[name](run) for name in shown]
            writer.writerow([run.path.name, run.status, *(run.overrides.get(k) for k in keys), _lr(run),
                             *("" if v is None else f"{v:.6g}" for v in values)])


def in_order(runs: list[RunRecord], keys: list[str]) -> list[RunRecord]:
    """The runs by their swept values, numbers by value (batch 4 before 16), as the tables list them."""
    return sorted(runs, key=lambda r: tuple(str(r.overrides.get(k)).zfill(12) for k in keys))


def sweep_table(runs: list[RunRecord], keys: list[str], title: str) -> Table:
    """A row per run: its status, the swept keys, the lr it trained at and the METRICS some run has."""
    shown = measured(runs)
    with_lr = any(run.metrics.lr is not None for run in runs)
    table = Table(title=title, header_style="bold")
    for column in ("status", *keys, *(["lr_effective"] if with_lr else []), *shown):
        table.add_column(column, justify="right" if column in (*shown, "lr_effective") else "left")
    for run in in_order(runs, keys):
        style = None if run.status == "completed" else "red"
        table.add_row(escape(run.status), *(escape(str(run.overrides.get(k, ""))) for k in keys),
                      *([_lr(run)] if with_lr else []), *(cell(run, name) for name in shown), style=style)
    return table


def critical_batch_table(found: list[Series]) -> Table:
    """Steps to each series' target by batch size beside the runs' B_simple, and the fitted B_crit under them (why
    there is none: `no_fit_lines`)."""
    table = Table(title="critical batch: steps to the target (measured) vs B_simple (predicted)",
                  header_style="bold")
    for column in ("series", "target loss", "batch", "steps to target", "B_simple at target"):
        table.add_column(column, justify="left" if column == "series" else "right")
    for series in found:
        for batch in sorted({*series.steps, *series.b_simple}):
            steps, b_simple, low = series.steps.get(batch), series.b_simple.get(batch), series.b_simple_low.get(batch)
            noise = about(b_simple) if b_simple is not None else f">= {about(low)}" if low is not None else "-"
            table.add_row(escape(series.name), f"{series.target:.4g}", str(batch),
                          "-" if steps is None else f"{steps:.0f}", noise)
        fit = f"B_crit ~ {about(series.fit.b_crit)} (fit)" if series.fit else "no B_crit"
        median_b = series.b_simple_median
        table.add_row(escape(series.name), "", "", fit, "-" if median_b is None else f"median {about(median_b)}",
                      style="bold", end_section=True)
    return table


def no_fit_lines(found: list[Series]) -> list[str]:
    """Why a series of the critical-batch table has no B_crit: a sentence too long for a cell."""
    return [f"{series.name}: no B_crit: {series.why_no_fit}" for series in found if series.fit is None]


def sweep_findings(runs: list[RunRecord]) -> list[Finding]:
    """Findings that only a sweep can show, with the thresholds the jobs ran with."""
    configured = next((r.metrics.config["findings"] for r in runs if "findings" in r.metrics.config), {})
    known = {k: v for k, v in configured.items() if k in Thresholds.__dataclass_fields__}
    return bn_small_batch(runs, Thresholds(**known), swept_keys(runs))


def _holders(names: list[str], of: int) -> str:
    """The runs a finding holds for, as its text names them (job names hold commas: '; ' between them)."""
    if len(names) == 1:
        return names[0]
    return f"all {of} runs" if len(names) == of else f"{len(names)} runs ({'; '.join(names)})"


def report_findings(runs: list[RunRecord], sweep: list[Finding]) -> list[Finding]:
    """What a sweep's report says: the `sweep`'s own findings first, then the runs', each said once with the runs it
    holds for named (a 'no findings' every job shares: once), errors first."""
    holders: dict[tuple[str, str, str, str], tuple[Finding, list[str]]] = {}
    for run in in_order(runs, swept_keys(runs)):
        for f in run.metrics.findings:
            holders.setdefault((f.rule, f.severity, f.message, f.remedy), (f, []))[1].append(run.path.name)
    said = [replace(f, message=f"{_holders(names, len(runs))}: {f.message}") for f, names in holders.values()]
    said.sort(key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else len(SEVERITIES))
    return [replace(f, message=f"the sweep: {f.message}") for f in sweep] + said


def write_findings(sweep_dir: Path, runs: list[RunRecord], findings: list[Finding]) -> None:
    """findings.json (the sweep's own findings), and what `diagnose report` says under TensorBoard's Text, in the
    sweep folder's run (sensitivity/, beside its figures), which `tensorboard --logdir SWEEP` lists."""
    from torch.utils.tensorboard import SummaryWriter

    (sweep_dir / FINDINGS_JSON).write_text(json.dumps(as_dicts(findings), indent=2))
    if said := report_findings(runs, findings):
        with SummaryWriter(str(sweep_dir / SENSITIVITY_DIR)) as writer:
            writer.add_text("findings", as_markdown(said), 0)


def summarise_sweep(sweep_dir: Path, console: Console | None = None) -> list[RunRecord]:
    """Everything a finished sweep writes into its folder, and what it prints."""
    runs = find_runs(sweep_dir)
    keys = swept_keys(runs)
    write_csv(sweep_dir / SUMMARY_CSV, runs, keys)
    critical: list[Series] = []
    note = ""
    if "batch" in keys:
        write_sensitivity(sweep_dir, runs, keys, {name: METRICS[name] for name in measured(runs)})
        found = [series for series in critical_batches(runs, keys) if series.steps]
        if worth_fitting(found):
            critical = found
            write_critical_batches(sweep_dir, critical)
        else:
            note = no_fit_note(runs)
    write_hparams(runs, keys)
    findings = sweep_findings(runs)
    write_findings(sweep_dir, runs, findings)
    console = console or shared_console
    line(console, escape(f"sweep {sweep_dir}: {len(runs)} runs"))
    print_tables(sweep_table(runs, keys, "runs"), console, keys=1 + len(keys))
    if critical:
        print_tables(critical_batch_table(critical), console)
    for said in [*no_fit_lines(critical), *([note] if note else [])]:
        line(console, escape(said))
    print_findings(findings, console, log=False)  # the launching process: Hydra's console logger would repeat them
    return runs
