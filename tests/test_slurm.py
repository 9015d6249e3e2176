"""Sweeps through `hydra/launcher=submitit_slurm` on a real one-node SLURM (scripts/slurm_cluster.sh start): what
README's cluster section promises, against slurmctld itself. Skipped where no cluster is up; CI starts one and sets
DIAGNOSE_SLURM=required, so that a cluster that failed to start fails these tests instead of skipping them."""

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TINY, TINY_DATA, compose_config, run_cli, start_cli

from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=10", "threads=1"]


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """The environment that reaches the cluster (SLURM_CONF), or a skip, or in CI a failure, where none is up."""
    status = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "status"], capture_output=True,
                            text=True, timeout=60)
    found = re.search(r"export SLURM_CONF=(\S+)", status.stdout)
    if status.returncode or not found:
        message = (f"no SLURM cluster is up ({status.stderr.strip()}): `bash scripts/slurm_cluster.sh start` as root "
                   f"starts one")
        pytest.fail(message) if os.environ.get("DIAGNOSE_SLURM") == "required" else pytest.skip(message)
    return {"SLURM_CONF": found.group(1)}


def sweep_dir_of(folder: Path) -> Path:
    (sweep,) = (folder / "outputs" / "multirun").glob("*/*")
    return sweep


@pytest.mark.slow(seconds=12)
def test_a_sweep_on_slurm_sums_up_as_with_the_local_launcher_and_a_failing_job_gives_its_exit_code(slurm_env, tmp_path,
                                                                                                   capsys):
    # one sweep for both (each costs ~35 s): 4 jobs, one of which fails (GN's 8 groups do not divide 6 channels)
    result = run_cli(["train", "-m", *SLURM, *TINY_DATA, "model.widths=[6,12],[8,16]", "norm=bn,gn"], tmp_path,
                     env=slurm_env)
    sweep = sweep_dir_of(tmp_path)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(list(sweep.glob(".submitit/*_*/*_log.out"))) == 4  # four SLURM array tasks ran them
    rows = {(r["model.widths"], r["norm"]): r["status"] for r in csv.DictReader((sweep / "summary.csv").open())}
    assert rows == {("[6,12]", "bn"): "completed", ("[6,12]", "gn"): "failed", ("[8,16]", "bn"): "completed",
                    ("[8,16]", "gn"): "completed"}
    from diagnose.cli.commands import main

    main(["report", str(sweep)])
    assert "4 runs" in capsys.readouterr().out
    # accounting is off here, as on many small clusters: sacct's failure is said once, not every poll
    said = result.stdout + result.stderr
    assert said.count("sacct") == said.count("Slurm accounting storage is disabled") == 1 and "Bypassing" not in said

    # the failing job: the sweep's exit code, and the others' results
    assert result.returncode == 2, result.stderr
    assert "1 failed on a user error of the sweep's 4 jobs" in " ".join(result.stderr.split())
    failed = json.loads((sweep / "model.widths=[6,12],norm=gn" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "6 channels" in failed["error"]
    for job in ("model.widths=[6,12],norm=bn", "model.widths=[8,16],norm=bn", "model.widths=[8,16],norm=gn"):
        assert json.loads((sweep / job / "metrics.json").read_text())["final"]["test_acc"] is not None


def slurm_job_of(sweep: Path, timeout: float = 120) -> str:
    """The SLURM job id of a one-job sweep's job, once submitit has made its folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(sweep.glob(".submitit/*/*_log.out"))  # .submitit/<SLURM job id>/<job id>_<task>_log.out
        if found:
            return found[0].parent.name
        time.sleep(0.5)
    raise AssertionError(f"no SLURM job in {sweep}")


@pytest.mark.slow(seconds=18)
def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(slurm_env, tmp_path):
    # epochs of 1000 steps (1500 steps, ~2 s of training), the SLURM signal after step 200: the checkpoint it
    # resumes from is the interruption's, not an epoch end's
    longer = {"steps": "steps=1500", "log_every": "log_every=100", "data.train_count": "data.train_count=16064"}
    config = [longer.pop(o.split("=")[0], o) for o in TINY] + list(longer.values())
    # submitit counts a USR2 this early in a 10-minute job as its time limit: it requeues it up to twice
    launcher = start_cli(["train", "-m", *SLURM, *config, "hydra.launcher.max_num_timeout=2"], tmp_path,
                         env=slurm_env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp_path.glob("outputs/multirun/*/*/**/train.log")):
            time.sleep(0.2)
        (log,) = tmp_path.glob("outputs/multirun/*/*/**/train.log")  # a sweep of one job: it runs in the sweep's folder
        run_dir, job = log.parent, slurm_job_of(sweep_dir_of(tmp_path))
        while time.monotonic() < deadline and max(map(int, re.findall(r"step (\d+)/", log.read_text())),
                                                  default=0) < 200:  # well into its training
            time.sleep(0.05)
        # what SLURM sends before a job's time limit (and on preemption, with a requeue to follow): USR2
        subprocess.run(["scancel", "--signal=USR2", job], env={**os.environ, **slurm_env}, check=True, timeout=30)
        # while SLURM holds the job for its requeue (~6 s idle): the same run, here, uninterrupted
        cfg = compose_config([*config, "threads=1"])
        expected = train(build_run(cfg), tmp_path / "alone", to_dict(cfg)).to_json()
        out, err = launcher.communicate(timeout=240)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, err
    logged = log.read_text()
    stopped = re.search(r"SIGUSR2: stopping after (\d+) steps", logged)
    assert stopped and 200 <= int(stopped.group(1)) < 1000, logged  # it stopped in the middle, saved, and came back
    assert f"requeued by SLURM: going on from step {stopped.group(1)}" in logged  # one log, resumed where it stopped
    assert logged.count("SIGUSR2: stopping") == 1 and "step 1500/1500" in logged
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 1500

    # the same run, uninterrupted: the same numbers
    for key in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert metrics["final"][key] == pytest.approx(expected["final"][key], rel=1e-6), key


# What the requeue rests on, without a cluster


def test_slurms_usr2_stops_training_and_is_handed_to_submitits_handler_once_the_state_is_saved():
    import signal

    from diagnose.training.stop import StopRequests

    handed = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))  # as submitit's requeue
    try:
        with StopRequests() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.requested == "SIGUSR2" and handed == []  # training stops at its next step, not at once
        stop.pass_on()
        assert handed == [signal.SIGUSR2]
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # no one waits for it (not under submitit): left alone
        with StopRequests():
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_a_job_goes_on_from_its_own_checkpoint_only_when_slurm_requeued_it(tmp_path, monkeypatch):
    from diagnose.build import build_run
    from diagnose.cli.jobs import requeued
    from diagnose.config import to_dict
    from diagnose.training.loop import train

    cfg = compose_config([*TINY, "steps=3"])
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued(tmp_path) is None  # requeued before its first checkpoint: it starts again
    train(build_run(cfg), tmp_path, to_dict(cfg))
    assert requeued(tmp_path)["step"] == 3
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # SLURM's first start of the job
    assert requeued(tmp_path) is None
    monkeypatch.delenv("SLURM_RESTART_COUNT")  # not under SLURM
    assert requeued(tmp_path) is None
