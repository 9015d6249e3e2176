"""Nothing lost, nothing unreadable: stops at any moment, errors after training, strict files, exit codes."""

import json
import os
import shutil
import signal
import stat

import pytest
import torch
from conftest import TINY, compose_config

from diagnose.build import build_run
from diagnose.cli.callbacks import sweep_outcome
from diagnose.cli.exits import EXIT_CODES, INTERNAL_ERROR_EXIT, USER_ERROR_EXIT
from diagnose.config import to_dict
from diagnose.results import RunMetrics
from diagnose.training import loop, outputs
from diagnose.training.loop import train
from diagnose.training.outputs import load_checkpoint
from diagnose.training.stop import StopRequests


def test_a_signal_before_training_begins_stops_at_step_0_with_a_checkpoint_to_resume(tmp_path):
    cfg = compose_config([*TINY, "steps=6"])
    with StopRequests() as stop:
        run = build_run(cfg)
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, while the data loads
        metrics = train(run, tmp_path, to_dict(cfg), stop=stop)
    assert metrics.status == "interrupted" and metrics.steps == 0
    assert load_checkpoint(tmp_path)["step"] == 0
    resumed = train(build_run(cfg), tmp_path, to_dict(cfg), resume=load_checkpoint(tmp_path))
    assert resumed.status == "completed" and resumed.steps == 6


def test_a_signal_in_the_final_test_pass_saves_everything_and_resume_finishes_it(tmp_path, monkeypatch):
    cfg = compose_config([*TINY, "steps=4"])
    whole = train(build_run(cfg), tmp_path / "whole", to_dict(cfg))
    test_pass = loop.evaluate_test

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # one Ctrl-C, in the middle of the test pass
        return test_pass(*args)

    monkeypatch.setattr(loop, "evaluate_test", interrupted)
    stopped = train(build_run(cfg), tmp_path / "split", to_dict(cfg))
    assert stopped.status == "interrupted" and stopped.steps == 4 and stopped.final.test_acc is None
    assert json.loads((tmp_path / "split" / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(loop, "evaluate_test", test_pass)
    resumed = train(build_run(cfg), tmp_path / "split", to_dict(cfg), resume=load_checkpoint(tmp_path / "split"))
    assert resumed.status == "completed" and resumed.final == whole.final  # the test pass, done on resume


def test_an_error_after_training_keeps_the_trained_state_and_says_failed(tmp_path, monkeypatch):
    cfg = compose_config([*TINY, "steps=4"])

    def broken(*args):
        raise TypeError("a bug in the findings")

    monkeypatch.setattr(loop, "end_run", broken)
    with pytest.raises(TypeError):
        train(build_run(cfg), tmp_path, to_dict(cfg))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == "TypeError: a bug in the findings"
    assert load_checkpoint(tmp_path)["step"] == 4  # the trained weights, saved before the results were made


def test_metrics_json_is_strict_json_and_reads_back_its_non_finite_values(tmp_path):
    # statistics every step: the step that diverged is measured
    cfg = compose_config([*TINY, "lr=1e12", "norm=none", "steps=20", "optim.momentum=0.0", "diag.every=1"])
    metrics = train(build_run(cfg), tmp_path, to_dict(cfg))
    assert metrics.status == "diverged"
    text = (tmp_path / "metrics.json").read_text()

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    saved = json.loads(text, parse_constant=refuse)  # NaN and Infinity are not JSON
    assert saved["non_finite"]["/layers/features.0.act/act_std"] in ("nan", "inf")  # the std that overflowed
    assert saved["layers"]["features.0.act"]["act_std"] is None
    again = RunMetrics.from_json(saved)
    assert not torch.isfinite(torch.tensor(again.value("act_std", "features.0.act")))
    assert again.to_json() == metrics.to_json()  # NaN == NaN is false: compared as the file has them


def test_outputs_get_the_permissions_of_the_umask(tmp_path):
    cfg = compose_config([*TINY, "steps=2"])
    previous = os.umask(0o022)
    try:
        train(build_run(cfg), tmp_path, to_dict(cfg))
    finally:
        os.umask(previous)
    for name in ("metrics.json", "checkpoint.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_checkpoint_write_killed_halfway_leaves_no_temp_file_after_the_next_one(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"")  # what kill -9 in the middle of a write leaves
    cfg = compose_config([*TINY, "steps=2"])
    train(build_run(cfg), tmp_path, to_dict(cfg))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(("statuses", "code", "said"), [
    (["completed", "completed"], 0, ""),
    (["completed", "diverged"], EXIT_CODES["diverged"], "1 diverged of the sweep's 2 jobs"),
    (["diverged", "failed:user"], USER_ERROR_EXIT, "1 failed on a user error and 1 diverged of the sweep's 2 jobs"),
    (["failed:user", "failed:internal"], INTERNAL_ERROR_EXIT, "1 failed on an internal error and 1 failed on a user"),
    (["completed", "interrupted"], EXIT_CODES["interrupted"], "1 interrupted (resume= goes on with each) of the sweep"),
])
def test_a_sweep_exits_with_its_worst_job(statuses, code, said):
    jobs = [RunMetrics(status=s.split(":")[0], error_kind=s.split(":")[1] if ":" in s else None) for s in statuses]
    outcome, message = sweep_outcome(jobs)
    assert outcome == code and message.startswith(said)


def test_report_lists_broken_and_killed_runs_and_reports_the_rest(tmp_path, capsys, monkeypatch):
    from diagnose.cli.commands import main

    monkeypatch.setenv("COLUMNS", "200")
    cfg = compose_config([*TINY, "steps=2"])
    train(build_run(cfg), tmp_path / "good", to_dict(cfg))
    for name in ("truncated", "not_an_object", "broken_overrides", "killed"):
        shutil.copytree(tmp_path / "good", tmp_path / name)
    metrics = tmp_path / "truncated" / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])
    (tmp_path / "not_an_object" / "metrics.json").write_text("[1, 2]")
    (tmp_path / "broken_overrides" / ".hydra").mkdir()
    (tmp_path / "broken_overrides" / ".hydra" / "overrides.yaml").write_text("- a: [unclosed")
    (tmp_path / "killed" / "metrics.json").unlink()  # kill -9: the checkpoint of its last epoch, no metrics.json
    main(["report", str(tmp_path)])
    said = " ".join(capsys.readouterr().out.split())
    assert said.count("completed") >= 2 and said.count("unreadable") == 2 and "resumable" in said
    as_json = json.loads((main(["report", str(tmp_path), "--json"]), capsys.readouterr().out)[1])
    status = {run["path"].rsplit("/", 1)[1]: run["status"] for run in as_json["runs"]}
    assert status == {"good": "completed", "truncated": "unreadable", "not_an_object": "unreadable",
                      "broken_overrides": "completed", "killed": "resumable"}
    (killed,) = [run for run in as_json["runs"] if run["status"] == "resumable"]
    assert f"resume={tmp_path / 'killed'}" in killed["error"]


def test_a_run_folder_has_one_owner(tmp_path):
    import subprocess
    import sys

    from diagnose.cli.ownership import own, refuse_a_used_folder, release
    from diagnose.errors import UserError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from diagnose.cli.ownership import own; "
                               f"own({str(tmp_path)!r}); print('owned', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "owned"
        with pytest.raises(UserError, match=f"in use by another diagnose process \\(pid {holder.pid}\\)"):
            own(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    own(tmp_path)  # a killed owner's lock is gone with it
    release(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError, match="already holds a run \\(checkpoint.pt\\)"):
        refuse_a_used_folder(tmp_path, "hydra.run.dir")


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    from diagnose.cli import free

    taken = tmp_path / "10-00-00_norm=gn"
    assert free(str(taken)) == str(taken)
    taken.mkdir()
    assert free(str(taken)) == f"{taken}-2"


def test_a_full_disk_mid_run_is_one_message_and_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    import errno

    from diagnose.errors import UserError

    cfg = compose_config([*TINY, "steps=null", "epochs=3", "batch=64"])  # 3 steps an epoch: checkpoints at 3, 6
    saves, real_replace = [], outputs.replace_atomically

    def disk_fills_up(path, write):
        if path.name == "checkpoint.pt":
            saves.append(path)
            if len(saves) == 2:
                def write(f):
                    f.write(b"half a checkpoint")
                    raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(path, write)

    monkeypatch.setattr(outputs, "replace_atomically", disk_fills_up)
    with pytest.raises(UserError, match="cannot write into .*No space left on device.*resume="):
        train(build_run(cfg), tmp_path, to_dict(cfg))
    assert load_checkpoint(tmp_path)["step"] == 3  # the one before, whole
    assert not list(tmp_path.glob(".*.tmp"))
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"  # where it could be written


def test_a_disk_that_fills_under_tensorboards_writer_is_the_same_one_message_without_a_traceback(
        tmp_path, monkeypatch, capsys):
    import errno
    import logging

    from tensorboard.summary.writer.record_writer import RecordWriter

    from diagnose.errors import UserError

    records, real_write = [], RecordWriter.write

    def disk_fills_up(self, data):  # runs in the writer's own thread
        records.append(data)
        if len(records) > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", disk_fills_up)
    cfg = compose_config([*TINY, "steps=400", "log_every=1"])
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = logged.append  # the run's log (train.log under the CLI); caplog would miss it where an earlier
    logger = logging.getLogger("diagnose")  # test in this process left the logger not propagating
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    logger.addHandler(handler)
    try:
        with pytest.raises(UserError, match="cannot write into .*No space left on device.*not saved a checkpoint yet"):
            train(build_run(cfg), tmp_path, to_dict(cfg))
    finally:
        logger.removeHandler(handler)
    said = capsys.readouterr()
    assert "Traceback" not in said.err + said.out and "Exception in thread" not in said.err
    assert any(r.getMessage() == "a write in a background thread failed" and r.exc_info for r in logged)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_an_internal_error_is_one_paragraph_naming_the_log_and_metrics_say_failed(tmp_path, capsys):
    from omegaconf import OmegaConf

    from diagnose.cli.jobs import _failed

    code = _failed(TypeError("a bug"), OmegaConf.create({"batch": 4}), tmp_path, sweep=False)
    said = " ".join(capsys.readouterr().err.split())
    assert code == INTERNAL_ERROR_EXIT
    assert "internal error, a bug in diagnose" in said and f"{tmp_path / 'train.log'}" in said
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (saved["status"], saved["error"], saved["error_kind"]) == ("failed", "TypeError: a bug", "internal")


def test_report_reads_results_without_importing_torch(tmp_path):
    import subprocess
    import sys

    from diagnose.files import write_metrics
    from diagnose.results import Evaluation, Final

    write_metrics(tmp_path, RunMetrics(status="completed", steps=10, final=Final(val_acc=0.9),
                                       history=[Evaluation(10, 1.0, 0.3, 0.9)]))
    script = ("import sys\nfrom diagnose.cli.commands import main\nmain(['report', sys.argv[1]])\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")  # torch's import alone takes 0.7 s idle, several s under load


@pytest.mark.parametrize("command_line", [["train", "--help"], ["probe", "--help"], ["train", "norm=batchnorm"],
                                          ["train", "-m", "norm=bn,gn", "batch=2,4", "--help"]])
def test_help_and_a_mistake_are_said_without_importing_torch(command_line):
    """`--help` (Hydra composes the config it shows) and the check of a command line read the registries' options,
    not their makers: torch is imported only to build something."""
    import subprocess
    import sys

    script = ("import sys\nfrom diagnose.cli.commands import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
              "    pass\nprint('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", script, *command_line], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert ("norm: bin, bn, gn" in said) if "--help" in command_line else ("no norm option 'batchnorm'" in said)
    assert result.stdout.strip().endswith("no torch")
