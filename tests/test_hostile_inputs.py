"""Command lines and files a new user might try: each ends in one paragraph and README's exit code, with no traceback
and no folder left behind."""

import re

import pytest

from diagnose.cli.commands import main

# command line -> what its one paragraph must say; each is refused before Hydra makes a folder, with exit code 2
REFUSED = {
    "a sweep nested in a list": (["train", "-m", "seed=range(0,2),1"], r"Hydra cannot expand this sweep"),
    "one seed written two ways": (["train", "-m", "seed=0,00"], r"lists 0 and 00, one value: those jobs would be"),
    "one lr written two ways": (["train", "-m", "lr=0.1,1e-1"], r"lists 0.1 more than once"),
    "a group deleted": (["train", "~norm"], r"cannot delete 'norm'.*pick another option \(norm=<option>\)"),
    "the data deleted": (["train", "~data"], r"cannot delete 'data'.*Settings: batch"),
    "a nested key deleted": (["train", "~model.depth"], r"cannot delete 'model.depth'.*\(model.depth=<value>\)"),
    "a key without a value": (["train", "batch"], r"'batch' has no value.*Settings: batch, device"),
    "an unbalanced parenthesis": (["train", "lr=0.1)"], r"grammar cannot read this \(extraneous input.*Settings:"),
    "an open bracket": (["probe", "batch=["], r"batch=\[: Hydra's override grammar cannot read this.*probe --help"),
    "a seed beyond 64 bits": (["train", "seed=9223372036854775808"], r"seed must be a whole number in \[0, "),
    # more a new user tries
    "a word Hydra's lexer refuses": (["train", "act=ünïcode"], r"grammar cannot read this \(LexerNoViableAlt"),
    "a key under no group": (["train", "foo.bar=1"], r"'foo' is not a setting of `diagnose train`"),
    "a sweep of no values": (["train", "-m", "seed=range(0)"], r"gives seed no value: the sweep would run nothing"),
    "a sweep of a million jobs": (["train", "-m", "seed=range(0,1000000)"], r"makes 1,000,000 jobs; one sweep runs"),
    "a launcher that does not exist": (["train", "hydra/launcher=nonexistent"],
                                       r"Could not find 'hydra/launcher/nonexistent' Available options in "
                                       r"'hydra/launcher': basic, joblib, local"),
    "a launcher setting of the wrong one": (["train", "hydra.launcher.n_jobs=4"], r"Key 'n_jobs' not in 'BasicLaunch"),
    "a text for a launcher's number": (["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=abc"],
                                       r"could not be converted to Integer"),
    "a Hydra key deleted": (["train", "~hydra.job.chdir"], r"Could not delete from config"),
    "an empty output folder": (["train", "hydra.run.dir="], r"hydra.run.dir= is empty: give a folder"),
    "an empty resume": (["train", "resume="], r"resume= is empty: give a folder"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_hostile_command_line_is_one_paragraph_exit_2_and_no_folder(case, tmp_path, monkeypatch, capsys):
    args, message = REFUSED[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(args)
    said = capsys.readouterr()
    assert stop.value.code == 2, said
    assert said.err.startswith("Error: ") and said.err.count("\n") == 1, said.err  # one paragraph
    assert re.search(message, said.err), said.err
    assert "Traceback" not in said.out + said.err and not list(tmp_path.iterdir())


def completed_run(folder):
    """A run folder as a completed run leaves it, as far as `diagnose report` reads it."""
    from diagnose.files import write_metrics
    from diagnose.results import Evaluation, Final, RunMetrics

    folder.mkdir(parents=True)
    write_metrics(folder, RunMetrics(status="completed", steps=4, wall_time_s=1.5, images_per_s=100.0,
                                     final=Final(val_acc=0.5, test_acc=0.25),
                                     history=[Evaluation(step=4, epoch=1.0, val_loss=1.0, val_acc=0.5)]))
    return folder


@pytest.mark.parametrize(("key", "value", "said"), [
    ("final", {"val_acc": "0.5"}, "final.val_acc is '0.5', not a number"),
    ("wall_time_s", None, "wall_time_s is None, not a number"),
    ("steps", True, "steps is True, not a number"),
    ("status", 1, "status is 1, not text"),
    ("history", [{"step": 4, "epoch": 1, "val_loss": 1, "val_acc": [1]}], "history.val_acc is [1], not a number"),
])
def test_report_of_a_metrics_json_of_the_wrong_types_says_unreadable(key, value, said, tmp_path, capsys):
    import json

    run = completed_run(tmp_path / "run")
    data = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**data, key: value}))
    main(["report", str(run)])
    out = " ".join(capsys.readouterr().out.split())
    assert "unreadable" in out and said in out and "Traceback" not in out


def test_report_of_a_runs_own_file_reports_that_run(tmp_path, capsys):
    run = completed_run(tmp_path / "run")
    main(["report", str(run / "metrics.json")])
    out = " ".join(capsys.readouterr().out.split())
    assert f"run {run}: completed" in out and "│ test_acc │ 0.2500 │" in out
    (run / "notes.txt").write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["report", str(run / "notes.txt")])
    assert stop.value.code == 2 and "is a file; diagnose report reads a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(("line", "offered"), [
    ("diagnose train 'lr=interval(0.001,0.5)' no", "norm="),  # README's own quoted sweep before the word
    ("diagnose train -m 'lr=interval(0.001,0.5)' norm=g", "norm=gn"),
    ("diagnose train 'data.root=\"my data\"' no", "norm="),
    ("diagnose train batch=[ no", "norm="),  # a word Hydra cannot read before it
    ("diagnose train batch no", "norm="),
    ("diagnose train 'no", "norm="),  # the word itself opens a quote
])
def test_tab_completion_after_a_quoted_or_broken_word_offers_and_says_nothing_else(line, offered, capsys,
                                                                                   monkeypatch):
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    main(["-sc", "query=bash"])
    said = capsys.readouterr()
    assert offered in said.out.split() and not said.err, said


def a_sweep(folder):
    """A sweep folder as Hydra and diagnose leave it: multirun.yaml, summary.csv and a job with its results."""
    completed_run(folder / "seed=0")
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    (folder / "summary.csv").write_text("status\ncompleted\n")
    return folder


@pytest.mark.parametrize(("args", "said"), [
    (["-m", "seed=0,1", "hydra.sweep.dir=sweep"], r"hydra.sweep.dir=sweep already holds a sweep \(multirun.yaml"),
    (["hydra.run.dir=sweep"], r"hydra.run.dir=sweep already holds a sweep .*another run written into it"),
    (["hydra.run.dir=sweep/seed=0"], r"hydra.run.dir=sweep/seed=0 already holds a run \(metrics.json\)"),
    (["-m", "seed=0,1", "hydra.sweep.dir=sweep/seed=0"], r"already holds a run \(metrics.json\): a new sweep would"),
    (["-m", "seed=0,1", "hydra.sweep.dir=jobs_only"], r"jobs_only already holds a sweep \(the jobs seed=0\)"),
])
def test_a_folder_that_holds_a_sweep_or_a_run_is_never_written_into(args, said, tmp_path):
    from conftest import TINY, run_cli

    a_sweep(tmp_path / "sweep")
    completed_run(tmp_path / "jobs_only" / "seed=0")  # a sweep whose multirun.yaml was deleted: its jobs remain
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run_cli(["train", *TINY, *args], tmp_path)
    assert result.returncode == 2 and re.search(said, result.stderr), result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, nothing left behind


# a probe whose Jacobian takes seconds in Python's loop of jvp/vjp calls, where a signal is handled at once
SLOW_PROBE = ["probe", "model=mlp", "model.width=64", "model.depth=10", "probe.jacobian=moments", "probe.batch=2",
              "probe.shape=[1,8,8]", "device=cpu"]


@pytest.mark.slow  # a command started and stopped midway: 6-18 s each measured here, the 2 cores shared
@pytest.mark.parametrize(("command", "sig"), [
    (SLOW_PROBE, "SIGTERM"),  # Ctrl-C takes the same way (StopRequests)
    (["check", *["data=synthetic", "data.size=8", "device=cpu", "model.widths=[8,16]"]], "SIGTERM"),
])
def test_a_signal_during_probe_or_check_says_interrupted_exits_130_and_leaves_no_folder(command, sig, tmp_path):
    """SIGTERM (a scheduler's, `kill`) as Ctrl-C: it killed probe and check outright (exit 143, no word, a half-made
    folder)."""
    import signal

    from conftest import start_cli

    process = start_cli(command, tmp_path, stdout=False, sigint=True)  # Ctrl-C not ignored, as on a terminal
    try:
        started = "Jacobian:" if command[0] == "probe" else "data:"
        said = [next(line for line in process.stderr if line.startswith(started))]  # well inside the command
        process.send_signal(getattr(signal, sig))
        said += process.stderr.readlines()
        assert process.wait(timeout=60) == 130, said
    finally:
        process.kill()
    assert said[-1].startswith(f"Error: interrupted: the {command[0]} stopped before it finished"), said
    assert "Traceback" not in "".join(said) and not list(tmp_path.iterdir())


# `diagnose ARGV[2:]` with every path below the folder ARGV[1] refused as the OS refuses a user a folder of mode 000:
# the tests run as root, whom permissions do not stop
LOCKED_FOLDER = """
import os, pathlib, sys
locked, real_stat = os.path.abspath(sys.argv[1]), pathlib.Path.stat
def stat(self, *args, **kwargs):
    if os.path.abspath(self).startswith(locked + os.sep):
        raise PermissionError(13, "Permission denied", str(self))
    return real_stat(self, *args, **kwargs)
pathlib.Path.stat = stat
from diagnose.cli.commands import main
main(sys.argv[2:])
"""


@pytest.mark.slow  # a train command up to its data: 9-12 s measured here, the 2 cores shared
def test_a_data_folder_the_user_cannot_read_is_one_paragraph_and_no_folder(tmp_path):
    """It was an internal error (a PermissionError from looking for the files) with a failed run folder."""
    import subprocess
    import sys

    folder = tmp_path / "data" / "mnist"  # what it holds is not seen: every look into it is refused
    folder.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", LOCKED_FOLDER, str(folder), "train", "data=mnist", "data.root=data",
                             "data.download=false", "steps=1"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: Cannot look into the folder data/mnist: permission denied."), result.stderr
    assert "Traceback" not in result.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
