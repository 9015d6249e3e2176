"""What a run shows on the terminal, and writes to its train.log.

On a terminal: rich's progress bar and tables. Anywhere else (a file, `| tee`, a cluster job's log): one plain line
per log window and per evaluation, nothing redrawn, nothing wrapped at 80 columns. Every line a run says also goes
to Python's logging (logger "diagnose"), which Hydra writes to the run folder's train.log.
"""

import logging
import sys
from types import TracebackType

from rich.console import Console
from rich.markup import escape
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

# Off a terminal rich would wrap at 80 columns: paths, findings and table headers are wider than that.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
logger = logging.getLogger("diagnose")


_job = ""  # where jobs share the terminal (hydra/launcher=local): the job's name, said at the start of its lines


def side_by_side(job: str) -> None:
    """This process's job runs beside others on one terminal: each line it prints says whose it is, and no progress
    bar redraws itself over another job's."""
    global _job
    _job = job


def _whose(line: str) -> str:
    return f"{escape(f'[{_job}]')} {line}" if _job else line


def say(message: str, style: str = "") -> None:
    """One line to the terminal (in `style` on a terminal) and to the run's log."""
    console.print(_whose(f"[{style}]{escape(message)}[/]" if style else escape(message)), highlight=False)
    logger.info(message)


class RunProgress:
    """How far a training run is: steps, epoch, the last log window's loss and accuracy, the last validation
    accuracy. A rich bar on a terminal (moved every step), else a plain line per window and per evaluation."""

    def __init__(self, total: int, done: int, steps_per_epoch: int):
        self.total, self.steps_per_epoch = total, steps_per_epoch
        self.live = console.is_terminal and not _job
        self.val = ""
        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                            TextColumn("{task.fields[epoch]}"), TimeElapsedColumn(), TextColumn("<"),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                            disable=not self.live)
        self.task = self.bar.add_task("train", total=total, completed=done, epoch=self._epoch(done), stats="")

    def __enter__(self) -> "RunProgress":
        self.bar.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.bar.stop()

    def _epoch(self, step: int) -> str:
        return f"epoch {step / self.steps_per_epoch:.2f}"

    def step(self, step: int) -> None:
        if self.live:
            self.bar.update(self.task, completed=step, epoch=self._epoch(step))

    def window(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        stats = f"loss {loss:.4f}  acc {acc:.3f}  {images_per_s:,.0f} img/s{self.val}"
        self.bar.update(self.task, completed=step, epoch=self._epoch(step), stats=stats)
        line = f"step {step}/{self.total} {self._epoch(step)}  {stats}"
        console.print(_whose(escape(line)), highlight=False) if not self.live else None
        logger.info(line)

    def evaluation(self, step: int, val_loss: float, val_acc: float) -> None:
        self.val = f"  val acc {val_acc:.3f}"
        line = f"step {step}/{self.total} {self._epoch(step)}  val loss {val_loss:.4f}  val acc {val_acc:.4f}"
        console.print(_whose(escape(line)), highlight=False) if not self.live else None
        logger.info(line)


def print_summary(metrics: RunMetrics, out_dir: str) -> None:
    table = Table(title=f"diagnose: run {metrics.status}", show_header=True, header_style="bold")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("accuracy", justify="right")
    for split in ("train", "val", "test"):
        loss, acc = getattr(metrics.final, f"{split}_loss"), getattr(metrics.final, f"{split}_acc")
        if loss is not None:
            table.add_row(split, f"{loss:.4f}", f"{acc:.4f}")
            logger.info(f"{split}: loss {loss:.4f}  accuracy {acc:.4f}")
    if not _job:  # side by side, the sweep's summary table says it for every job at the end
        console.print(table)
    say(f"{metrics.steps} steps in {metrics.wall_time_s:.1f} s, {metrics.images_per_s:,.0f} images/s. "
        f"Run folder: {out_dir}")


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def print_findings(findings: list[Finding], to: Console = console, log: bool = True) -> None:
    """Each finding as one line: severity, what is seen with its evidence, and the remedy (also to the run's log)."""
    for f in findings:
        remedy = f" [dim]- {escape(f.remedy)}[/]" if f.remedy else ""
        line = f"[{SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]: {escape(f.message)}{remedy}"
        to.print(_whose(line) if to is console else line, highlight=False)
        if log:
            logger.info(f"{f.severity}: {f.text()}")
