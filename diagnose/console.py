"""What a run shows on the terminal, and writes to its train.log.

On a terminal: rich's progress bar and tables. Anywhere else (a file, `| tee`, a cluster job's log): one plain line
per log window and per evaluation, nothing redrawn. Every line a run says also goes to Python's logging (logger
"diagnose"), which Hydra writes to the run folder's train.log.

The width is rich's: COLUMNS where set, else the terminal's the command runs in, also when its output is piped
(`| cat`, `| less`, `| tee`: the user reads it there), else 80 (a cluster job's log, CI: what every viewer shows
without wrapping). Tables fit it with no cell cut (`fit`). A line that names a folder or a command is never broken
by rich: the terminal wraps it, and copies it whole. A finding wraps between words on a terminal and is one line
anywhere else, so that grep finds it.
"""

import logging
from collections.abc import Iterator
from types import TracebackType

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from diagnose.results import Finding, RunMetrics

console = Console(stderr=True)
logger = logging.getLogger("diagnose")


_job = ""  # where jobs share the terminal (hydra/launcher=local): the job's name, said at the start of its lines


def side_by_side(job: str) -> None:
    """This process's job runs beside others on one terminal: each line it prints says whose it is, and no progress
    bar redraws itself over another job's."""
    global _job
    _job = job


def _whose(line: str) -> str:
    return f"{escape(f'[{_job}]')} {line}" if _job else line


def line(to: Console, markup: str) -> None:
    """One line that rich never breaks: it may name a folder or a command to copy (the terminal wraps it)."""
    to.print(markup, highlight=False, soft_wrap=True)


def say(message: str, style: str = "") -> None:
    """One line to the terminal (in `style` on a terminal) and to the run's log."""
    line(console, _whose(f"[{style}]{escape(message)}[/]" if style else escape(message)))
    logger.info(message)


def _width(renderable: RenderableType, to: Console) -> int:
    """How wide `renderable` is when nothing limits it."""
    return Measurement.get(to, to.options.update_width(10_000), renderable).maximum


def _text(cell: RenderableType) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def _least(column: Column) -> int:
    """The narrowest `column` can be with each cell on one line and its header wrapped between words."""
    words = [_text(cell) for cell in column.cells] + _text(column.header).split()
    return max((cell_len(word) for word in words), default=1)


def _part(table: Table, columns: list[int], narrow: bool, title: str | None) -> Table:
    """`table`'s `columns` (same rows, styles and sections), each as narrow as `_least` where `narrow`."""
    part = Table(title=title, header_style=table.header_style, show_header=table.show_header, box=table.box,
                 show_lines=table.show_lines)
    for index in columns:
        column = table.columns[index]
        part.add_column(column.header, justify=column.justify, overflow="fold",
                        width=_least(column) if narrow else None)
    cells = [list(table.columns[index].cells) for index in columns]
    for row, values in zip(table.rows, zip(*cells, strict=True), strict=True):
        part.add_row(*values, style=row.style, end_section=row.end_section)
    return part


def _fitted(table: Table, columns: list[int], title: str | None, to: Console) -> Table:
    """The table of `columns` as it is where it fits `to`, else with its headers wrapped between words."""
    natural = _part(table, columns, False, title)
    return natural if _width(natural, to) <= to.width else _part(table, columns, True, title)


def fit(table: Table, to: Console, keys: int = 1) -> list[Table]:
    """`table` laid out to `to`'s width with no cell cut, where rich would shorten the widest column with "…" (a
    layer name, a path): as it is where it fits; else with its headers wrapped between words; else split into tables
    of a few columns each, every one led by the first `keys` columns (what names a row). For tables of names and
    numbers: each cell stays on one line (a column wider than the width alone is folded, still whole)."""
    if _width(table, to) <= to.width:
        return [table]
    every = list(range(len(table.columns)))
    whole = _fitted(table, every, table.title, to)
    if _width(whole, to) <= to.width or len(every) <= keys + 1:
        return [whole]
    parts: list[list[int]] = []
    for index in every[keys:]:
        if parts and _width(_part(table, every[:keys] + parts[-1] + [index], True, None), to) <= to.width:
            parts[-1].append(index)
        else:
            parts.append([index])
    return [_fitted(table, every[:keys] + part, f"{table.title or 'table'} ({n} of {len(parts)})", to)
            for n, part in enumerate(parts, start=1)]


def print_tables(table: Table, to: Console, keys: int = 1) -> None:
    """`table` as `fit` lays it out."""
    for part in fit(table, to, keys):
        to.print(part)


class _Bar(Progress):
    """Rich's progress bar that shows the first of its `layouts` that fits the terminal, as it is now: columns are
    dropped when narrow, not each cut short ("78/… 0:0…")."""

    def __init__(self, layouts: list[tuple[str | ProgressColumn, ...]], to: Console, disable: bool):
        self.layouts, self.to = layouts, to  # before rich's __init__, which renders once
        super().__init__(*layouts[0], console=to, disable=disable)

    def get_renderables(self) -> Iterator[Table]:
        for columns in self.layouts:
            self.columns = columns
            table = self.make_tasks_table(self.tasks)
            if _width(table, self.to) <= self.to.width:
                break
        yield table


def _layouts() -> list[tuple[str | ProgressColumn, ...]]:
    """The progress bar's columns, from the widest to the narrowest: every text column whole (strings are)."""
    whole = Column(no_wrap=True)
    steps = MofNCompleteColumn(table_column=whole)
    elapsed, remaining = TimeElapsedColumn(table_column=whole), TimeRemainingColumn(table_column=whole)
    epoch, loss, speed, val = (f"{{task.fields[{name}]}}" for name in ("epoch", "loss", "speed", "val"))
    return [("[bold]train", BarColumn(), steps, "steps", epoch, elapsed, "<", remaining, loss, speed, val),
            ("[bold]train", BarColumn(bar_width=10), steps, "steps", epoch, loss, val, remaining, "left"),
            ("[bold]train", BarColumn(bar_width=8), steps, epoch, loss, val),
            ("[bold]train", steps, epoch, loss, val),
            (steps, epoch, loss)]


class RunProgress:
    """How far a training run is: steps, epoch, the last log window's loss and accuracy, the last validation
    accuracy. A rich bar on a terminal (moved every step), else a plain line per window and per evaluation."""

    def __init__(self, total: int, done: int, steps_per_epoch: int):
        self.total, self.steps_per_epoch = total, steps_per_epoch
        self.live = console.is_terminal and not _job
        self.val = ""
        self.bar = _Bar(_layouts(), console, disable=not self.live)
        self.task = self.bar.add_task("train", total=total, completed=done, epoch=self._epoch(done), loss="",
                                      speed="", val="")

    def __enter__(self) -> "RunProgress":
        self.bar.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.bar.stop()

    def _epoch(self, step: int) -> str:
        return f"epoch {step / self.steps_per_epoch:.2f}"

    def _plain(self, text: str) -> None:
        """A plain line where there is no bar to show it, and always to the run's log."""
        if not self.live:
            line(console, _whose(escape(text)))
        logger.info(text)

    def step(self, step: int) -> None:
        if self.live:
            self.bar.update(self.task, completed=step, epoch=self._epoch(step))

    def window(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        shown = {"loss": f"loss {loss:.4f}  acc {acc:.3f}", "speed": f"{images_per_s:,.0f} img/s"}
        self.bar.update(self.task, completed=step, epoch=self._epoch(step), **shown)
        self._plain(f"step {step}/{self.total} {self._epoch(step)}  {shown['loss']}  {shown['speed']}{self.val}")

    def evaluation(self, step: int, val_loss: float, val_acc: float) -> None:
        self.val = f"  val acc {val_acc:.3f}"
        self.bar.update(self.task, val=self.val.strip())
        self._plain(f"step {step}/{self.total} {self._epoch(step)}  val loss {val_loss:.4f}  val acc {val_acc:.4f}")


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


def print_findings(findings: list[Finding], to: Console | None = None, log: bool = True) -> None:
    """Each finding as one paragraph: severity, what is seen with its evidence, and the remedy (also to the run's
    log), to `to` or the run's console. On a terminal it wraps between words; anywhere else it is one line, for grep."""
    ours = to is None
    to = to or console
    for f in findings:
        remedy = f" [dim]- {escape(f.remedy)}[/]" if f.remedy else ""
        said = f"[{SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]: {escape(f.message)}{remedy}"
        to.print(_whose(said) if ours else said, highlight=False, soft_wrap=not to.is_terminal)
        if log:
            logger.info(f"{f.severity}: {f.text()}")
