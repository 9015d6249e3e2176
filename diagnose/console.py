"""What a run shows on the terminal: a progress bar while training and a summary at the end."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from diagnose.results import Finding, RunMetrics

console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("<"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )


def stats_text(loss: float, acc: float, images_per_s: float) -> str:
    return f"loss {loss:.4f}  acc {acc:.3f}  {images_per_s:,.0f} img/s"


def print_summary(metrics: RunMetrics, out_dir: str) -> None:
    table = Table(title=f"diagnose: run {metrics.status}", show_header=True, header_style="bold")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("accuracy", justify="right")
    for split in ("train", "val", "test"):
        loss, acc = getattr(metrics.final, f"{split}_loss"), getattr(metrics.final, f"{split}_acc")
        if loss is not None:
            table.add_row(split, f"{loss:.4f}", f"{acc:.4f}")
    console.print(table)
    console.print(
        f"{metrics.steps} steps in {metrics.wall_time_s:.1f} s, "
        f"{metrics.images_per_s:,.0f} images/s. Run folder: {out_dir}"
    )


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def print_findings(findings: list[Finding], to: Console = console) -> None:
    """Each finding as one line: severity, what is seen with its evidence, and the remedy."""
    for f in findings:
        to.print(f"[{SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]: {f.message} [dim]- {f.remedy}[/]",
                 highlight=False)
