"""`diagnose` as a user runs it: a subprocess in a scratch folder."""

import json
import re

import pytest
from conftest import TINY, run_cli


def test_help_lists_the_commands(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0
    assert "train" in result.stdout and "usage: diagnose" in result.stdout


def test_train_help_lists_config_groups_and_their_options(tmp_path):
    result = run_cli(["train", "--help"], tmp_path)
    assert result.returncode == 0
    assert "norm: bin, bn, gn, in, ln, none" in result.stdout
    assert "act: elu, gelu, identity, leaky_relu, maxout, relu, sigmoid, tanh" in result.stdout
    assert "diagnose train norm=gn batch=4" in result.stdout


def test_train_writes_events_metrics_and_checkpoint(tmp_path):
    result = run_cli(["train", *TINY, "norm=gn", "batch=4"], tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["config"]["norm"] == {"name": "gn", "groups": 8} and metrics["config"]["batch"] == 4
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoint.pt").stat().st_size > 0
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "test" in result.stderr and "accuracy" in result.stderr  # the summary table


def test_multirun_runs_every_job_in_a_folder_named_by_its_overrides(tmp_path):
    tiny = [o for o in TINY if not o.startswith("batch=")]
    result = run_cli(["train", "-m", *tiny, "norm=bn,gn", "batch=4,8"], tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.parent.name for p in (tmp_path / "outputs" / "multirun").glob("*/*/*/metrics.json"))
    assert jobs == ["batch=4,norm=bn", "batch=4,norm=gn", "batch=8,norm=bn", "batch=8,norm=gn"]


def train_tiny(*overrides: str) -> list[str]:
    return ["train", *TINY, *overrides]


USER_ERRORS = {
    "unknown option": (train_tiny("norm=batchnorm"), r"Could not find 'norm/batchnorm'.*bin.*bn.*gn.*in.*ln.*none"),
    "unknown command": (["trian"], r"unknown command 'trian'. Valid commands: train"),
    "batch=0": (train_tiny("batch=0"), r"batch must be a whole number >= 1, got 0"),
    "batch=abc": (train_tiny("batch=abc"), r"batch must be a whole number >= 1, got 'abc'"),
    "lr=-1": (train_tiny("lr=-1"), r"lr must be a number > 0, got -1"),
    "epochs=0": (train_tiny("steps=null", "epochs=0"), r"epochs must be a whole number >= 1, got 0"),
    "gn groups": (train_tiny("norm=gn", "norm.groups=3"), r"norm.groups=3 needs every normalised layer's channel"),
    "too deep": (train_tiny("model.widths=[4,4,4,4,4]"), r"5 stages.*cannot be halved again"),
    "no such device": (train_tiny("device=mps"), r"device=mps was asked for, but this machine has no mps device"),
    "missing dataset": (["train", "data=mnist", "data.root=nowhere", "data.download=false"],
                        r"train-images-idx3-ubyte.*into the folder nowhere/mnist"),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_get_one_clear_message_and_a_nonzero_exit(case, tmp_path):
    args, message = USER_ERRORS[case]
    result = run_cli(args, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert re.search(message, " ".join((result.stderr + result.stdout).split())), result.stderr
    assert not list(tmp_path.glob("outputs/*/*")), "a failed run must not leave a run folder behind"
