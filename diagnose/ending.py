"""How every command ends a run: the findings judged from its metrics, printed, shown in TensorBoard's Text tab and
stored with the metrics in metrics.json."""

from pathlib import Path
from typing import Any

from diagnose.config import Thresholds
from diagnose.console import print_findings
from diagnose.files import write_metrics
from diagnose.findings import as_markdown, run_findings
from diagnose.results import RunMetrics


def end_run(out_dir: Path, metrics: RunMetrics, thresholds: Thresholds, writer: Any) -> RunMetrics:
    """Judge, print, log and store `metrics`. metrics.json is written last: its presence says the folder is
    complete."""
    metrics.findings = run_findings(metrics, thresholds)
    if metrics.findings:
        writer.add_text("findings", as_markdown(metrics.findings), metrics.steps)
        print_findings(metrics.findings)
    writer.close()
    write_metrics(out_dir, metrics)
    return metrics
