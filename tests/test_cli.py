"""`diagnose` as a user runs it: a subprocess in a scratch folder."""

import contextlib
import gzip
import json
import re
import socket

import numpy as np
import pytest
from conftest import TINY, TINY_DATA, run_cli
from idx_files import write_idx

from diagnose.build import build_run
from diagnose.cli.commands import command_help, main
from diagnose.cli.overrides import check_command_line, composed
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.inits import INITS
from diagnose.components.norms import NORMS
from diagnose.errors import UserError
from diagnose.probe import probe


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    said = capsys.readouterr().out
    assert stopped.value.code == 0 and "usage: diagnose" in said
    assert all(f"  {command} " in said for command in ("train", "probe", "report"))


def test_train_help_lists_config_groups_and_their_options():
    said = command_help("train", ["norm=gn"])
    for group, table in (("norm", NORMS), ("act", ACTIVATIONS), ("init", INITS)):
        assert f"{group}: {', '.join(sorted(table))}" in said
    assert "diagnose train norm=gn batch=4" in said
    assert "groups: 8" in said  # the config the command line would run, with its defaults


def test_train_writes_events_metrics_and_checkpoint(tmp_path):
    result = run_cli(["train", *TINY, "norm=gn", "batch=4"], tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    assert re.fullmatch(r"\d\d-\d\d-\d\d_batch=16,batch=4,data.size=8,.*", run_dir.name)  # named by its overrides
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["config"]["norm"] == {"name": "gn", "groups": 8} and metrics["config"]["batch"] == 4
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoint.pt").stat().st_size > 0
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "test" in result.stderr and "accuracy" in result.stderr  # the summary table
    # piped, as in a cluster job: a plain line per log window and per evaluation, nothing wrapped, all in train.log
    lines = result.stderr.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("step ")] == [  # 48 steps an epoch at batch 4
        "step 1/4 epoch 0.02", "step 2/4 epoch 0.04", "step 3/4 epoch 0.06", "step 4/4 epoch 0.08",
        "step 4/4 epoch 0.08"]
    assert any(line.endswith(f"Run folder: {run_dir}") for line in lines)  # one line, however long the path
    assert not [line for line in lines if line.startswith("train ")]  # no progress bar drawn into a file
    log = (run_dir / "train.log").read_text()
    assert "step 4/4 epoch 0.08  val loss" in log and f"Run folder: {run_dir}" in log


def test_a_diverging_run_says_where_and_exits_nonzero(tmp_path):
    result = run_cli(["train", *TINY, "norm=none", "optim.momentum=0.0", "steps=20", "lr=1e12"], tmp_path)
    assert result.returncode == 1
    said = " ".join((result.stdout + result.stderr).split())
    metrics = json.loads(next(tmp_path.glob("outputs/*/*/metrics.json")).read_text())
    assert metrics["status"] == "diverged"
    found = metrics["nonfinite"]
    assert f"step {found['step']}" in said and found["layer"] in said and "Traceback" not in said


def train_tiny(*overrides: str) -> list[str]:
    return ["train", *TINY, *overrides]


# command line -> what the one-paragraph message must say
USER_ERRORS = {
    "unknown option": (train_tiny("norm=batchnorm"),
                       r"there is no norm option 'batchnorm'. Valid options: bin, bn, gn, in, ln, none"),
    "unknown option in a sweep": (["train", "-m", "norm=bn,gnn"], r"there is no norm option 'gnn'. Did you mean 'gn'"),
    "batch=0": (train_tiny("batch=0"), r"batch must be a whole number >= 1, got 0"),
    "batch=abc": (train_tiny("batch=abc"), r"batch must be a whole number, got 'abc'"),
    "a bad value in a sweep": (["train", "-m", "batch=4,abc"], r"batch must be a whole number, got 'abc'"),
    "a value out of range in a sweep": (["train", "-m", "batch=4,8", "lr=0.1,-1"], r"lr must be a number > 0, got -1"),
    "a value out of range in a sweep of a hundred jobs": (["train", "-m", "seed=range(100)", "lr=-1"],
                                                           r"lr must be a number > 0, got -1"),
    "the 71st value of a sweep of 71 jobs": (["train", "-m", f"lr={','.join(f'0.{i + 1:02d}' for i in range(70))},-1"],
                                             r"lr must be a number > 0, got -1"),
    "a sweep of jobs that would share a folder": (["train", "-m", "seed=0,0,1"],
                                                  r"seed=0,0,1 lists 0 more than once: those jobs would be the same"),
    "a combination no job can build": (["train", "-m", "norm=bn,gn", "norm.groups=4"],
                                       r"norm.groups is not a setting of norm=bn"),
    "two swept values that cannot go together": (["train", "-m", "optim.momentum=0.9,0", "optim.nesterov=false,true"],
                                                 r"optim.nesterov=true needs optim.momentum > 0"),
    "lr=-1": (train_tiny("lr=-1"), r"lr must be a number > 0, got -1"),
    "a local launcher without workers": (["train", "-m", "hydra/launcher=local", "hydra.launcher.workers=-1"],
                                         r"hydra.launcher.workers must be a whole number >= 0, got -1"),
    "epochs=0": (train_tiny("steps=null", "epochs=0"), r"epochs must be a whole number >= 1, got 0"),
    "gn groups": (train_tiny("norm=gn", "norm.groups=3"), r"norm.groups=3 needs every normalised layer's channel"),
    "too deep": (train_tiny("model.widths=[4,4,4,4,4]"), r"5 stages.*cannot be halved again"),
    "no such device": (train_tiny("device=mps"), r"device=mps was asked for, but this machine has no mps device"),
    "missing dataset": (["train", "data=mnist", "data.root=nowhere", "data.download=false"],
                        r"train-images-idx3-ubyte.*into the folder nowhere/mnist"),
    "unknown key": (train_tiny("batchsize=4"), r"'batchsize' is not a setting of `diagnose train`. Did you mean"),
    "unknown nested key": (train_tiny("model.depthh=3"),
                           r"model.depthh is not a setting of model=cnn. Its settings: widths, blocks, dropout"),
    "steps=-5": (train_tiny("steps=-5"), r"steps must be a whole number >= 1, got -5"),
    "lr=nan": (train_tiny("lr=nan"), r"lr must be a number > 0, got nan"),
    "dropout=1.5": (train_tiny("model.dropout=1.5"), r"model.dropout must be a number in \[0, 1\), got 1.5"),
    "val_size too large": (train_tiny("data.val_size=100000"), r"data.val_size=100000 must be below the"),
    "subset=0": (train_tiny("data.subset=0"), r"data.subset must be a whole number >= 1, got 0"),
    "val_size=-1": (train_tiny("data.val_size=-1"), r"data.val_size must be a whole number >= 0, got -1"),
    "batch > data": (train_tiny("batch=100000"), r"batch=100000 is larger than the 192 training examples"),
    "maxout pieces=1": (train_tiny("act=maxout", "act.pieces=1"), r"act.pieces must be a whole number >= 2, got 1"),
    "negative init std": (train_tiny("init=normal", "init.std=-1"), r"init.std must be a number >= 0, got -1"),
    "class weights": (train_tiny("loss.weight=[1,2]"), r"loss.weight has 2 class weights, but the dataset has 10"),
    "nesterov": (train_tiny("optim.nesterov=true", "optim.momentum=0"),
                 r"optim.nesterov=true needs optim.momentum > 0"),
    "precision": (train_tiny("precision=fp16"), r"precision must be one of fp32, bf16; got 'fp16'"),
    "lr scaling": (train_tiny("optim.lr_scaling=cubic"), r"optim.lr_scaling must be one of none, sqrt, linear"),
    "empty widths": (train_tiny("model.widths=[]"), r"model.widths must be a list of channel counts"),
    "probe input": (["probe", "probe.input=camera", "model.depth=2", "model.width=8"],
                    r"probe.input must be one of gaussian, data; got 'camera'"),
    "unknown device": (["probe", "device=gpu", "model.depth=2", "model.width=8"],
                       r"Unknown device 'gpu'. Valid options: auto, cpu, cuda, mps"),
    "batchnorm at batch 1": (["train", *TINY_DATA, "model=mlp", "batch=1"],
                             r"This combination cannot train: Expected more than 1 value per channel.*BatchNorm needs"),
    "instance norm on 1x1": (train_tiny("norm=in", "model.widths=[4,4,4,4]"),
                             r"This combination cannot train:.*at least 2x2 maps"),
    "negative clip": (train_tiny("clip=value", "clip.max=-1"), r"clip.max must be a number > 0, got -1"),
    "label smoothing": (train_tiny("loss.label_smoothing=2"), r"loss.label_smoothing must be a number in \[0, 1\]"),
    # the typed schema turns each of these into a message (they were tracebacks or wrong behaviour)
    "a float where a whole number goes": (train_tiny("batch=1.5"), r"batch must be a whole number, got '1.5'"),
    "text for a number": (train_tiny("act=leaky_relu", "act.slope=abc"), r"act.slope must be a number, got 'abc'"),
    "focal gamma": (train_tiny("loss=focal", "loss.gamma=abc"), r"loss.gamma must be a number, got 'abc'"),
    "milestones": (train_tiny("schedule=step", "schedule.milestones=abc"), r"schedule.milestones must be a list"),
    "subset text": (train_tiny("data.subset=abc"), r"data.subset must be a whole number, got 'abc'"),
    "a threshold": (train_tiny("findings.dead=abc"), r"findings.dead must be a number, got 'abc'"),
    "a flag": (train_tiny("diag.landscape=maybe"), r"diag.landscape must be true or false, got 'maybe'"),
    "a list entry": (train_tiny("model.widths=[8,x]"), r"model.widths\[1\] must be a whole number, got 'x'"),
    "null for a number": (train_tiny("batch=null"), r"batch cannot be null"),
    "momentum that never decays": (train_tiny("optim.momentum=2"), r"optim.momentum must be a number in \[0, 1\)"),
    "a negative class weight": (train_tiny("loss.weight=[1,-1,1,1,1,1,1,1,1,1]"), r"each of loss.weight must be"),
    "a typo's own did-you-mean": (train_tiny("model.depht=3"), r"model.depht is not a setting of model=cnn"),
    "a typo added with +": (train_tiny("+model.depht=3"), r"diagnose has no setting 'model.depht' to add"),
}


def first_error(args: list[str], out_dir) -> str:
    """The message `diagnose ARGS` stops with, in-process: the checks of the command line, then building the run
    (or the probe). The CLI prints it as one line and exits 2 (test_a_user_error_exits_2_...)."""
    command, rest = args[0], args[1:]
    with pytest.raises(UserError) as raised:
        check_command_line(command, rest)
        config = composed(command, [a for a in rest if "=" in a])
        build_run(config) if command == "train" else probe(config, out_dir)
    return " ".join(str(raised.value).split())


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_get_one_clear_message(case, tmp_path):
    args, message = USER_ERRORS[case]
    said = first_error(args, tmp_path)
    assert re.search(message, said), said
    assert "\n" not in str(said) and len(said) < 600


@pytest.mark.parametrize("args", [train_tiny("batch=0"), train_tiny("device=mps"), ["trian"]],
                         ids=["found by the early check", "found while building", "unknown command"])
def test_a_user_error_exits_2_with_one_line_and_leaves_no_folder(args, tmp_path):
    result = run_cli(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists(), "a failed run must not leave a run folder behind"


def test_an_unwritable_output_folder_is_said_in_one_line(tmp_path):
    (tmp_path / "a_file").touch()  # a file where a folder should be: unwritable, even for root
    result = run_cli(train_tiny("hydra.run.dir=a_file/run"), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot write the run's output folder a_file/run" in " ".join(result.stderr.split())


def write_mnist(root, *, images=8, labels=8, gzip=True):
    """A small dataset in the official MNIST layout: root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzip else ""
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", np.zeros((images, 28, 28), np.uint8), gzip)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.zeros(labels, np.uint8), gzip)
    return folder


def truncate(folder):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])


def bad_magic(folder):
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))


def wrong_shape(folder):
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8), True)  # 8 images, 5 labels


DATA_ERRORS = {
    "truncated": (truncate, r"train-images-idx3-ubyte.gz.*(truncated|corrupt)"),
    "corrupt": (bad_magic, r"t10k-labels-idx1-ubyte.gz"),
    "wrong shape": (wrong_shape, r"do not fit together: the training split has 8 images but 5 labels"),
}


@pytest.mark.parametrize("case", sorted(DATA_ERRORS))
def test_bad_dataset_files_are_named_in_the_error(case, tmp_path):
    spoil, message = DATA_ERRORS[case]
    spoil(write_mnist(tmp_path / "data"))
    before = sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir())
    said = first_error(["train", "data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false",
                        "data.val_size=2", "batch=2", "steps=1"], tmp_path)
    assert re.search(message, said), said
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == before  # nothing added or removed


def test_a_failed_download_names_the_files_and_leaves_nothing_behind(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: the download is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = first_error(["train", "data=mnist", f"data.root={tmp_path / 'data'}",
                           f"data.mirror=http://127.0.0.1:{port}/", "steps=1"], tmp_path)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "data" / "mnist") in message
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


@pytest.mark.parametrize("args", [["norm=gn", "batch=4"], ["-m", "norm=bn,gn", "batch=2,4"], ["-m", "norm=glob(b*)"],
                                  ["norm=gn", "norm.groups=4"], ["hydra/launcher=joblib"], ["lr=0.1"],
                                  ["-m", "batch=range(2,10,2)"], ["hydra.run.dir=somewhere"]])
def test_valid_command_lines_pass_the_early_checks(args):
    check_command_line("train", args)  # returns; a bad one raises with a message (USER_ERRORS above)


def test_the_early_checks_stop_an_unknown_option_among_valid_ones():
    with pytest.raises(UserError, match="there is no norm option 'ggn'"):
        check_command_line("train", ["-m", "norm=bn,gn,ggn", "batch=2,4"])


@pytest.mark.parametrize(("line", "offered", "not_offered"), [
    ("diagnose t", ["train"], ["probe", "check"]),
    ("diagnose ", ["train", "probe", "check", "report"], []),
    ("diagnose train norm=", ["norm=bn", "norm=gn", "norm=bin"], ["act=relu"]),
    ("diagnose train ", ["batch=", "norm=", "optim.", "hydra."], ["probe_model=", "schema", "probe."]),
    ("diagnose probe act=t", ["act=tanh"], ["act=relu"]),
    ("diagnose train norm=gn norm.g", ["norm.groups="], []),
    ("diagnose train hydra/launcher=", ["hydra/launcher=local", "hydra/launcher=basic"], []),
    ("diagnose train +no", ["+norm="], []),
    ("diagnose pr| norm=gn", ["probe"], ["train"]),  # | the cursor: what follows it is not completed
])
def test_tab_completion_completes_the_command_then_its_settings(line, offered, not_offered, capsys, monkeypatch):
    """What Hydra's installed completion script asks (`diagnose -sc query=bash` with the typed line in COMP_LINE,
    the cursor in COMP_POINT)."""
    monkeypatch.setenv("COMP_LINE", line.replace("|", ""))
    monkeypatch.setenv("COMP_POINT", str(line.index("|") if "|" in line else len(line)))
    main(["-sc", "query=bash"])
    words = capsys.readouterr().out.split()
    assert set(offered) <= set(words), words
    assert not set(not_offered) & set(words), words


def test_tab_completion_without_a_request_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "-sc"])
    assert stop.value.code == 2
    assert "-sc takes install=<shell>, uninstall=<shell> or query=<shell>" in capsys.readouterr().err


def test_tab_completion_works_in_bash(tmp_path):
    """The script `diagnose -sc install=bash` prints, run by bash as it completes a word."""
    import os
    import subprocess
    import sys

    script = ('eval "$(diagnose -sc install=bash)"\n'
              'COMP_LINE="diagnose train norm=g"; COMP_WORDS=(diagnose train norm=g); COMP_CWORD=2\n'
              'hydra_bash_completion; echo "after norm=g: ${COMPREPLY[*]}"\n'
              'COMP_LINE="diagnose pro"; COMP_WORDS=(diagnose pro); COMP_CWORD=1\n'
              'hydra_bash_completion; echo "after pro: ${COMPREPLY[*]}"\n')
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "after norm=g: norm=gn\n" in result.stdout and "after pro: probe\n" in result.stdout, result.stdout


def test_hydras_own_help_gives_the_completion_commands_for_diagnose(capsys):
    with contextlib.suppress(SystemExit):
        main(["train", "--hydra-help"])
    said = capsys.readouterr().out
    assert 'eval "$(diagnose -sc install=bash)"' in said and "diagnose-train" not in said
