"""Interrupts and resume: a run stopped by a signal goes on from its checkpoint to the very same numbers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, compose_config, compose_raw, run_cli, start_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose.build import build_run
from diagnose.cli.jobs import resumable
from diagnose.cli.overrides import check_command_line
from diagnose.config import from_dict, to_dict
from diagnose.errors import UserError
from diagnose.training.loop import train
from diagnose.training.outputs import load_checkpoint, save_checkpoint

# long enough to be interrupted in the middle, with dropout and augmentation so every random stream matters
RESUMABLE = [*TINY, "steps=40", "log_every=5", "model.dropout=0.3", "data.augment=true", "diag.every=3",
             "diag.probe_every=4"]


def test_sigint_stops_between_steps_and_saves_everything(tmp_path):
    cfg = compose_config(RESUMABLE)
    run = build_run(cfg)
    real_loss, calls = run.loss_fn, {"n": 0}
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup and in a background job

    def loss_that_gets_interrupted(logits, target):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, in the middle of step 7
        return real_loss(logits, target)

    run.loss_fn = loss_that_gets_interrupted
    metrics = train(run, tmp_path, to_dict(cfg))
    assert metrics.status == "interrupted" and metrics.steps == 7  # step 7 finished, step 8 never began
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(tmp_path)["step"] == 7
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    cfg = compose_config(RESUMABLE)
    config = to_dict(cfg)
    whole = train(build_run(cfg), tmp_path / "whole", config)

    run = build_run(cfg)
    real_loss, calls = run.loss_fn, {"n": 0}

    def interrupted_at_9(logits, target):
        calls["n"] += 1
        if calls["n"] == 9:  # step 9 of a 12-step epoch: resuming starts mid-epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(logits, target)

    run.loss_fn = interrupted_at_9
    first = train(run, tmp_path / "split", config)
    assert first.status == "interrupted" and first.steps == 9
    checkpoint = load_checkpoint(tmp_path / "split")
    assert 0 < checkpoint["record"]["wall_time"] <= first.wall_time_s  # the interrupted part's time, said and saved
    checkpoint["record"]["wall_time"] = 1000.0  # as if that part had taken 1000 s: the resumed run's clock goes on
    began = time.perf_counter()
    second = train(build_run(cfg), tmp_path / "split", config, resume=checkpoint)
    assert 1000 < second.wall_time_s < 1000 + time.perf_counter() - began
    assert second.status == "completed" and second.steps == 40
    assert second.final == whole.final
    assert second.history == whole.history
    assert second.layers == whole.layers and second.dead_history == whole.dead_history
    assert second.run_means == whole.run_means
    # the same event folder: train/loss covers every log window once (log_every=5), the window cut by the
    # interruption (steps 6-10) included, with the uninterrupted run's values
    split, whole_events = (EventAccumulator(str(tmp_path / name)).Reload() for name in ("split", "whole"))
    points = [(e.step, e.value) for e in split.Scalars("train/loss")]
    assert [step for step, _ in points] == list(range(2, 41, 2))  # log_every=5 bounds it: 20 points over 40 steps
    assert points == [(e.step, e.value) for e in whole_events.Scalars("train/loss")]


@pytest.mark.slow
def test_sigterm_to_a_cli_run_then_resume_from_the_command_line(tmp_path):
    args = ["train", *RESUMABLE, "steps=400", "data.train_count=2000"]
    process = start_cli(args, tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("outputs/*/*/events.out.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # some steps in
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 0 < stopped["steps"] < 400

    resumed = run_cli(["train", f"resume={run_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 400
    assert [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")] == [run_dir]  # no second run folder
    logged = (run_dir / "train.log").read_text()  # one log: the resumed run's lines follow the interrupted one's
    assert logged.index("SIGTERM: stopping after") < logged.index("step 400/400")

    (tmp_path / "reference").mkdir()
    assert run_cli(args, tmp_path / "reference").returncode == 0
    (ref_dir,) = [p.parent for p in (tmp_path / "reference").glob("outputs/*/*/metrics.json")]
    assert json.loads((ref_dir / "metrics.json").read_text())["final"] == metrics["final"]


def resume_error(run_dir, *overrides: str) -> str:
    """The message `diagnose train resume=RUN_DIR OVERRIDES` stops with, in-process: what the train job does before
    it goes on training (the CLI prints it as one line with exit code 2, as test_cli checks for every user error)."""
    command_line = [f"resume={run_dir}", *overrides]
    with pytest.raises(UserError) as raised:
        check_command_line("train", command_line)
        checkpoint, folder = resumable(compose_raw(command_line), command_line)
        train(build_run(from_dict(checkpoint["config"])), folder, checkpoint["config"], resume=checkpoint)
    return " ".join(str(raised.value).split())


def train_steps(run, n: int) -> list[torch.Tensor]:
    """`n` plain optimizer steps on one fixed batch; the weights after them."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, *run.data.shape, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    for _ in range(n):
        run.optimizer.zero_grad()
        run.loss_fn(run.model(x), y).backward()
        run.optimizer.step()
    return [p.detach().clone() for p in run.model.parameters()]


def state_after_three_steps(cfg):
    from diagnose.training.state import capture

    first = build_run(cfg)
    train_steps(first, 3)  # momentum buffers exist now
    return capture(first, torch.Generator(), 3)


def test_restoring_one_state_twice_gives_the_same_steps():
    """The divergence replay restores the last good state, trains, and restores it again: training after a
    restore must not change the state it came from (the optimizer would adopt its momentum tensors)."""
    from diagnose.training.state import restore

    cfg = compose_config(TINY)
    state = state_after_three_steps(cfg)
    runs = build_run(cfg), build_run(cfg)
    weights = []
    for run in runs:
        restore(run, torch.Generator(), state)
        weights.append(train_steps(run, 3))
    for first, second in zip(*weights, strict=True):
        torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_a_checkpoint_saved_in_another_memory_layout_resumes_to_the_same_weights():
    """A checkpoint from an NCHW run (an older version, a run begun on a GPU) restored into a channels_last
    model: the momentum must be laid out like its parameter, or the fused update mixes up its elements."""
    from diagnose.training.state import restore

    cfg = compose_config(TINY)
    state = state_after_three_steps(cfg)
    nchw = {**state, "model": {k: v.contiguous() for k, v in state["model"].items()},
            "optimizer": {**state["optimizer"], "state": {
                i: {k: v.contiguous() if torch.is_tensor(v) else v for k, v in s.items()}
                for i, s in state["optimizer"]["state"].items()}}}
    assert any(not v.is_contiguous(memory_format=torch.channels_last)
               for s in nchw["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v) and v.dim() == 4)
    expected, resumed = build_run(cfg), build_run(cfg)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in resumed.model.parameters())  # channels_last
    restore(expected, torch.Generator(), state)
    restore(resumed, torch.Generator(), nchw)
    for want, got in zip(train_steps(expected, 3), train_steps(resumed, 3), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_resume_refuses_a_different_configuration(tmp_path):
    cfg = compose_config(RESUMABLE)
    run = build_run(cfg)
    run.total_steps = 5  # stop early, as an interrupted run would have
    train(run, tmp_path, to_dict(cfg))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["status"] = "interrupted"
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    message = resume_error(tmp_path, "model.widths=[4,4]")
    assert "model.widths (the run has [8, 16], the command line [4, 4])" in message


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    cfg = compose_config([*TINY, "steps=3"])
    train(build_run(cfg), tmp_path, to_dict(cfg))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["config"]["model"]["widths"] = [4, 8]  # e.g. a checkpoint copied into another run's folder
    torch.save(state, tmp_path / "checkpoint.pt")
    (tmp_path / "metrics.json").unlink()  # as after a kill: resumable from its last checkpoint
    assert "The checkpoint does not fit the run this config builds" in resume_error(tmp_path)


def test_a_diverged_run_cannot_be_resumed(tmp_path):
    cfg = compose_config([*TINY, "lr=1e12", "norm=none", "steps=20", "optim.momentum=0.0"])
    assert train(build_run(cfg), tmp_path, to_dict(cfg)).status == "diverged"
    assert "only an interrupted run can be resumed" in resume_error(tmp_path)


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "there is no checkpoint.pt in that folder"),
    ("corrupt", "checkpoint.pt cannot be read"),
    ("foreign", "is not a diagnose checkpoint"),
])
def test_resume_errors_are_clear(setup, message, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if setup == "corrupt":
        (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    elif setup == "foreign":
        torch.save({"weights": torch.zeros(3)}, run_dir / "checkpoint.pt")
    assert message in resume_error(run_dir)


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"step": 1})
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def dies_halfway(state, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"step": 2})
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_a_second_ctrl_c_before_the_first_checkpoint_says_there_is_none(tmp_path, caplog):
    cfg = compose_config(RESUMABLE)
    run = build_run(cfg)
    real_loss, calls = run.loss_fn, {"n": 0}

    def loss_that_gets_two_ctrl_c(logits, target):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3 of a 12-step epoch: no checkpoint yet
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second one stops in the middle of the step
        return real_loss(logits, target)

    run.loss_fn = loss_that_gets_two_ctrl_c
    with caplog.at_level("INFO", logger="diagnose"):
        metrics = train(run, tmp_path, to_dict(cfg))
    assert metrics.status == "interrupted" and not (tmp_path / "checkpoint.pt").exists()
    said = caplog.text
    assert "there is no checkpoint yet" in said and "from an epoch end" not in said


@pytest.mark.slow
def test_a_crash_in_a_resumed_run_is_recorded_in_that_run_and_no_other_folder_is_left(tmp_path):
    cfg = compose_config(RESUMABLE)
    run = build_run(cfg)
    real_loss, calls = run.loss_fn, {"n": 0}

    def interrupted_at_9(logits, target):
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(logits, target)

    run.loss_fn = interrupted_at_9
    run_dir = tmp_path / "run"
    assert train(run, run_dir, to_dict(cfg)).status == "interrupted"
    (run_dir / "train.log").write_text("the interrupted run's lines\n")
    # the resumed run's first step fails as a bug in diagnose would
    script = ("import sys\nimport diagnose.training.loop as loop\n"
              "def bug(*args, **kwargs):\n    raise RuntimeError('a bug')\n"
              "loop.train_step = bug\nfrom diagnose.cli.commands import main\nmain(['train', sys.argv[1]])\n")
    result = subprocess.run([sys.executable, "-c", script, f"resume={run_dir}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 3, result.stderr
    said = " ".join(result.stderr.split())
    assert f"The traceback is in {run_dir / 'train.log'}" in said and f"resume={run_dir} goes on" in said
    assert not (tmp_path / "outputs").exists()  # the resume command's own folder is gone, with no metrics.json
    logged = (run_dir / "train.log").read_text()
    assert logged.startswith("the interrupted run's lines\n") and "RuntimeError: a bug" in logged
    failed = json.loads((run_dir / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: a bug" and failed["steps"] == 9


def test_a_probe_that_fails_on_a_bug_is_recorded_as_a_probe_and_offers_no_resume(tmp_path, capsys):
    from omegaconf import OmegaConf

    from diagnose.cli.exits import INTERNAL_ERROR_EXIT
    from diagnose.cli.jobs import _failed

    code = _failed(MemoryError("can't allocate memory"), OmegaConf.create({"batch": 4}), tmp_path, sweep=False,
                   command="probe")
    said = " ".join(capsys.readouterr().err.split())
    assert code == INTERNAL_ERROR_EXIT and f"{tmp_path / 'probe.log'}" in said and "resume=" not in said
    assert json.loads((tmp_path / "metrics.json").read_text())["command"] == "probe"
