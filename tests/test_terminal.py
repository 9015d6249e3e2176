"""What the terminal shows reads whole at 80 columns, on a terminal and piped: names, folders and resume= commands
are never cut, tables fit the width, findings wrap between words (one line each when piped), the progress bar keeps
its step count."""

import fcntl
import io
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import TINY_DATA, compose_config, run_cli, start_cli
from rich.console import Console
from rich.table import Table

from diagnose import console as terminal
from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.files import read_metrics
from diagnose.results import Finding
from diagnose.training.loop import train

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TABLE = re.compile(r"^[┏┃┡│└┌├]")  # a line of a rich table (its borders)
# a run folder name as Hydra writes one for a command line of several overrides: wider than 80 columns with its path
LONG = "10-00-00_act=relu,data=synthetic,model=mlp,model.depth=12,model.width=8,norm=none,seed=0"


def on_a_terminal(args: list[str], cwd: Path, columns: int = 80) -> str:
    """What `diagnose ARGS` shows on a pseudo-terminal `columns` wide, escape codes taken out."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = start_cli(args, cwd, env={"COLUMNS": str(columns), "TERM": "xterm-256color"}, tty=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=60)
    os.close(leader)
    assert process.returncode == 0, shown.decode()
    return ANSI.sub("", shown.decode()).replace("\r\n", "\n")


def piped(args: list[str], cwd: Path, columns: int | None = 80) -> str:
    """What `diagnose ARGS` writes into a pipe (`| cat`), with COLUMNS set to `columns` or, None, unset and no
    terminal anywhere (a cluster job's log)."""
    if columns is None:
        env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
        result = subprocess.run([sys.executable, "-m", "diagnose", *args], cwd=cwd, env=env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=60, start_new_session=True)
    else:
        result = run_cli(args, cwd, timeout=60, env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def whole(name: str, text: str) -> bool:
    """`name` appears in `text` as it is: not cut, not run into other characters of a name."""
    return re.search(rf"(?<![\w.=/]){re.escape(name)}(?![\w.])", text) is not None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny MLP run of 12 layers (names up to features.11.linear) in a folder whose path is wider than 80
    columns, and a copy of it as a process killed outright leaves it: its checkpoint, no metrics.json."""
    root = tmp_path_factory.mktemp("terminal") / "outputs" / "2026-12-03"
    cfg = compose_config([*TINY_DATA, "model=mlp", "model.depth=12", "model.width=8", "norm=none", "steps=2"])
    train(build_run(cfg), root / LONG, to_dict(cfg))
    killed = root / f"{LONG}-2"
    shutil.copytree(root / LONG, killed)
    (killed / "metrics.json").unlink()
    return root / LONG, killed


@pytest.mark.slow
def test_the_tests_forked_diagnose_says_and_exits_as_a_fresh_one(runs, tmp_path, monkeypatch):
    # run_cli forks `diagnose` from a server that has done its imports (tests/cli_server.py): what every other test
    # reads of a command holds only where that child is the process `python -m diagnose` would be: its width, its
    # exit code, its streams, a run through Hydra's job
    def said(result: subprocess.CompletedProcess) -> tuple[int, str, str]:  # less a run's own speed and folder
        timing = re.compile(r"in [\d.]+ s, [\d,]+ images/s|[\d,]+ img/s|run_(forked|fresh)")
        return result.returncode, timing.sub("", result.stdout), timing.sub("", result.stderr)

    train = ["train", *TINY_DATA, "steps=2", "model.widths=[4,8]"]
    for args in (["report", str(runs[0])], train):
        forked = run_cli([*args, "hydra.run.dir=run_forked"] if args is train else args, tmp_path,
                         env={"COLUMNS": "60"})
        monkeypatch.setenv("DIAGNOSE_TEST_FRESH", "1")
        fresh = run_cli([*args, "hydra.run.dir=run_fresh"] if args is train else args, tmp_path,
                        env={"COLUMNS": "60"})
        monkeypatch.delenv("DIAGNOSE_TEST_FRESH")
        assert said(forked) == said(fresh)
        assert forked.stdout + forked.stderr and not (tmp_path / "outputs").exists()
    assert (tmp_path / "run_forked" / "metrics.json").exists()
    assert any(TABLE.match(line) for line in forked.stderr.splitlines())  # a table: drawn to the width


def test_the_server_forks_only_what_a_fresh_process_would_be():
    from cli_server import CliServer

    server, env = CliServer(), dict(os.environ)
    assert server.fits({**env, "COLUMNS": "60", "PYTHONPATH": "elsewhere"})  # read by the command itself
    assert not server.fits({**env, "OMP_NUM_THREADS": "7"})  # read by torch's thread pool as the process starts
    server.busy = True  # a started command holds it
    assert not server.fits(env)


@pytest.mark.parametrize("where", ["terminal", "piped"])
def test_report_at_80_columns_shows_every_layer_name_and_the_folder_whole(runs, where, tmp_path):
    run, _ = runs
    shown = (on_a_terminal if where == "terminal" else piped)(["report", str(run)], tmp_path)
    metrics = read_metrics(run)
    assert len(metrics.layers) == 25 and "features.11.linear" in metrics.layers  # 12 x (linear, act) + head
    assert all(whole(name, shown) for name in metrics.layers), shown
    assert "…" not in shown
    assert f"run {run}: completed" in shown.splitlines()  # the folder on a line of its own, to copy
    tables = [line for line in shown.splitlines() if TABLE.match(line)]
    assert tables and max(len(line) for line in tables) <= 80


@pytest.mark.parametrize("where", ["terminal", "piped"])
def test_report_at_80_columns_shows_the_resume_command_of_a_killed_run_whole(runs, where, tmp_path):
    _, killed = runs
    shown = (on_a_terminal if where == "terminal" else piped)(["report", str(killed)], tmp_path)
    assert any(line.endswith(f"diagnose train resume={killed}") for line in shown.splitlines()), shown
    assert f"run {killed}: resumable" in shown and "…" not in shown


def test_findings_wrap_between_words_on_a_terminal_and_are_one_line_each_when_piped(runs, tmp_path):
    run, _ = runs
    findings = read_metrics(run).findings
    shown = on_a_terminal(["report", str(run)], tmp_path)
    words = " ".join(shown.split())
    assert all(" ".join(f"{f.severity}: {f.text()}".split()) in words for f in findings)  # no word cut in two
    said = piped(["report", str(run)], tmp_path, columns=None)  # no COLUMNS, no terminal: 80 columns
    assert all(f"{f.severity}: {f.text()}" in said.splitlines() for f in findings)  # for grep
    tables = [line for line in said.splitlines() if TABLE.match(line)]
    assert tables and max(len(line) for line in tables) <= 80
    assert all(whole(name, said) for name in read_metrics(run).layers)


def test_a_finding_on_an_80_column_terminal_breaks_only_between_words():
    text = ("12-61% dead ReLU units in 3 of 3 ReLU layers (features.0.act, features.1.act, features.2.act), from "
            "step 8: no gradient reaches them")
    shown = io.StringIO()
    terminal.print_findings([Finding("dead_relus", "warning", text, "use leaky_relu")],
                            Console(file=shown, force_terminal=True, width=80, color_system=None), log=False)
    lines = shown.getvalue().splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines)
    assert [word for line in lines for word in line.split()] == f"warning: {text} - use leaky_relu".split()


def table_of(names: list[str], columns: int) -> Table:
    table = Table(title="per layer")
    table.add_column("layer")
    for n in range(columns):
        table.add_column(f"metric number {n}", justify="right")
    for i, name in enumerate(names):
        table.add_row(name, *(f"{-1.23456e-5 * (i + 1) * (n + 1):.3g}" for n in range(columns)))
    return table


@pytest.mark.parametrize(("width", "parts"), [(200, 1), (80, 2), (50, 4)])
def test_a_table_too_wide_is_split_by_columns_with_its_names_in_each_part_and_no_cell_cut(width, parts):
    names = [f"features.{i}.linear" for i in range(12)]
    table = table_of(names, 7)
    to = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    found = terminal.fit(table, to)
    for part in found:
        to.print(part)
    shown = to.export_text()
    assert len(found) == parts and "…" not in shown
    assert max(len(line) for line in shown.splitlines()) <= width
    assert all(shown.count(f" {name} ") == parts for name in names)  # the names lead every part, whole
    cells = {cell for column in table.columns[1:] for cell in column.cells}
    assert {word for word in shown.split() if word in cells} == cells  # every number whole, once a part has it


@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_progress_bar_keeps_its_step_count_epoch_and_loss_whole(width, monkeypatch):
    monkeypatch.setattr(terminal, "console", Console(file=io.StringIO(), force_terminal=True, width=width))
    progress = terminal.RunProgress(total=100_000, done=0, steps_per_epoch=430)
    progress.evaluation(78_000, 0.45, 0.8523)
    progress.window(78_123, 0.41234, 0.8612, 12_345.0)
    shown = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    shown.print(*progress.bar.get_renderables())
    bar = shown.export_text()
    assert len(bar.splitlines()) == 1 and len(bar.rstrip("\n")) <= width and "…" not in bar
    for part in ("78123/100000", "epoch 181.68", "loss 0.4123", "acc 0.861", "val acc 0.852"):
        assert part in bar, bar
    assert ("12,345 img/s" in bar) == (width >= 150)  # the first to go when narrow


def test_piped_a_run_says_a_plain_line_per_window_and_evaluation(monkeypatch):
    shown = io.StringIO()
    monkeypatch.setattr(terminal, "console", Console(file=shown, width=80))  # not a terminal
    progress = terminal.RunProgress(total=100_000, done=0, steps_per_epoch=430)
    with progress:
        progress.evaluation(78_000, 0.45, 0.8523)
        progress.window(78_123, 0.41234, 0.8612, 12_345.0)
    assert shown.getvalue().splitlines() == [
        "step 78000/100000 epoch 181.40  val loss 0.4500  val acc 0.8523",
        "step 78123/100000 epoch 181.68  loss 0.4123  acc 0.861  12,345 img/s  val acc 0.852"]


FOLDER = "outputs/2026-12-03/10-00-00_a_run_folder_whose_name_is_too_long_for_one_line_of_80_columns"


@pytest.mark.slow  # a training run on a pseudo-terminal: ~6 s
def test_a_run_on_an_80_column_terminal_shows_its_progress_and_findings_whole(tmp_path):
    shown = on_a_terminal(["train", *TINY_DATA, "model=mlp", "model.depth=12", "model.width=8", "norm=none",
                           "steps=30", "log_every=10", f"hydra.run.dir={FOLDER}"], tmp_path)
    findings = read_metrics(tmp_path / FOLDER).findings
    assert re.search(r"30/30 .*epoch 2\.50 .*loss \d\.\d{4}", shown), shown  # the bar's last frame
    words = " ".join(shown.split())
    assert findings and all(" ".join(f"{f.severity}: {f.text()}".split()) in words for f in findings)
    assert any(line.endswith(f"Run folder: {tmp_path / FOLDER}") for line in shown.splitlines())  # whole
