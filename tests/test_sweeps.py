"""Sweeps: every job runs, failures are recorded, and the sweep's summary and report read right."""

import contextlib
import csv
import io
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, needs_fashion, run_cli, start_cli
from filelock import FileLock
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from diagnose.cli.commands import main
from diagnose.errors import UserError
from diagnose.files import write_metrics
from diagnose.findings import about
from diagnose.results import Final, Finding, NoiseScale, RunMetrics
from diagnose.sweep.critical_batch import Fit, Series, critical_batch_figure
from diagnose.sweep.runs import RunRecord, find_runs
from diagnose.sweep.summary import cell, report_findings, summarise_sweep, sweep_table

SWEEP_TINY = [o for o in TINY if not o.startswith("batch=")]


def sweep_dir_of(tmp_path):
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    return sweep


@pytest.fixture(scope="session")
def bn_gn_sweep(tmp_path_factory, worker_id) -> tuple:
    """A 2x2 sweep, norm x batch, on tiny synthetic data: (its folder, what it printed). Made once, also when the
    tests run in several pytest-xdist workers: the first makes it in their shared folder, the others wait for it."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    cwd, printed = shared / "bn_gn_sweep", shared / "bn_gn_sweep.stderr"
    with FileLock(str(shared / "bn_gn_sweep.lock")):
        if not printed.exists():
            cwd.mkdir()
            result = run_cli(["train", "-m", *SWEEP_TINY, "norm=bn,gn", "batch=8,16"], cwd)
            assert result.returncode == 0, result.stderr
            printed.write_text(result.stderr)
    return sweep_dir_of(cwd), printed.read_text()


@pytest.mark.slow  # the sweep they read takes ~7 s
def test_every_job_runs_in_a_folder_named_by_what_varies(bn_gn_sweep):
    sweep, _ = bn_gn_sweep
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["batch=16,norm=bn", "batch=16,norm=gn", "batch=8,norm=bn", "batch=8,norm=gn"]


@pytest.mark.slow  # the sweep they read takes ~7 s
def test_sensitivity_curves_have_batch_size_on_the_x_axis_and_one_series_per_norm(bn_gn_sweep):
    sweep, _ = bn_gn_sweep
    series = sorted(p.name for p in (sweep / "sensitivity").iterdir() if p.is_dir())
    assert series == ["norm=bn", "norm=gn"]
    assert (sweep / "sensitivity.png").stat().st_size > 10_000  # the figure on a log2 batch axis
    figure = EventAccumulator(str(sweep / "sensitivity")).Reload()
    assert "sensitivity/figure" in figure.Tags()["images"] and "custom_scalars__config__" in figure.Tags()["tensors"]
    for name in series:
        events = EventAccumulator(str(sweep / "sensitivity" / name)).Reload()
        for metric in ("val_acc", "test_acc", "train_loss"):
            assert [e.step for e in events.Scalars(f"sensitivity/{metric}")] == [8, 16]
        job_metrics = json.loads((sweep / f"batch=8,{name}" / "metrics.json").read_text())
        assert events.Scalars("sensitivity/val_acc")[0].value == pytest.approx(job_metrics["final"]["val_acc"])
    bn = EventAccumulator(str(sweep / "sensitivity" / "norm=bn")).Reload()
    assert [e.step for e in bn.Scalars("sensitivity/bn_train_eval_gap")] == [8, 16]


@pytest.mark.slow  # the sweep they read takes ~7 s
def test_hparams_rows_are_written_into_each_job_folder(bn_gn_sweep):
    sweep, _ = bn_gn_sweep
    for job in sweep.glob("*/metrics.json"):
        events = EventAccumulator(str(job.parent)).Reload()
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {k: v.ListFields()[0][1] for k, v in start.session_start_info.hparams.items()}
        name = job.parent.name  # e.g. batch=8,norm=gn
        assert hparams["norm"] == name.split("norm=")[1] and int(hparams["batch"]) == int(name.split(",")[0][6:])
        assert hparams["batch"] in (" 8", "16")  # whole numbers as padded text: shown as 8, sorted before 16
        assert hparams["status"] == "completed"
        assert "hparam/val_acc" in events.Tags()["scalars"]
    assert not list(sweep.glob("batch=*/*/events.out.*")), "no timestamped sub-runs inside a job"


@pytest.mark.slow  # the sweep they read takes ~7 s
def test_summary_csv_and_the_terminal_table(bn_gn_sweep):
    sweep, printed = bn_gn_sweep
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted((r["norm"], r["batch"], r["status"]) for r in rows) == [
        ("bn", "16", "completed"), ("bn", "8", "completed"), ("gn", "16", "completed"), ("gn", "8", "completed")]
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert "bn_train_eval_gap" in printed and "sweep" in printed
    assert not (sweep / "critical_batch.png").exists() and "this sweep has 2 (8, 16)" in " ".join(printed.split())


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_go_on(tmp_path):
    # GN's default 8 groups do not divide 6 channels: that job fails, the BN one trains
    result = run_cli(["train", "-m", *TINY, "model.widths=[6,12]", "norm=bn,gn"], tmp_path)
    assert result.returncode == 2, result.stderr  # the sweep went on, and its exit code says a job failed
    assert "1 failed on a user error of the sweep's 2 jobs" in " ".join(result.stderr.split())
    sweep = sweep_dir_of(tmp_path)
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")}
    assert status == {"norm=bn": "completed", "norm=gn": "failed"}
    failed = json.loads((sweep / "norm=gn" / "metrics.json").read_text())
    assert "norm.groups=8" in failed["error"] and "6 channels" in failed["error"]
    rows = {r["norm"]: r["status"] for r in csv.DictReader((sweep / "summary.csv").open())}
    assert rows == {"bn": "completed", "gn": "failed"}


@pytest.mark.slow
def test_a_diverging_job_is_recorded_and_the_others_go_on(tmp_path):
    result = run_cli(["train", "-m", *TINY, "norm=none", "optim.momentum=0.0", "steps=20", "lr=0.01,1e12"], tmp_path)
    assert result.returncode == 1, result.stderr  # a sweep with a diverged job exits as a diverged run does
    sweep = sweep_dir_of(tmp_path)
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")}
    assert status == {"lr=0.01": "completed", "lr=1000000000000.0": "diverged"}  # Hydra spells out 1e12
    rows = {float(r["lr"]): r["status"] for r in csv.DictReader((sweep / "summary.csv").open())}
    assert rows == {0.01: "completed", 1e12: "diverged"}


def report(args: list[str], capsys) -> str:
    """What `diagnose report ARGS` prints (run in this process: report is plain Python, no Hydra)."""
    main(["report", *args])
    return capsys.readouterr().out


@pytest.mark.slow  # the sweep they read takes ~7 s
def test_report_on_a_sweep_and_on_one_run(bn_gn_sweep, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    sweep, _ = bn_gn_sweep
    table = report([str(sweep)], capsys)
    assert "final val_acc by batch size" in table and "norm=gn" in table and "batch=16" in table
    as_json = json.loads(report([str(sweep), "--json"], capsys))
    assert as_json["swept"] == ["norm", "batch"] and len(as_json["runs"]) == 4
    (run,) = json.loads(report([str(sweep / "batch=8,norm=bn"), "--json"], capsys))["runs"]
    assert run["status"] == "completed" and "features.0.act" in run["layers"]
    text = report([str(sweep / "batch=8,norm=bn")], capsys)
    assert "test_acc" in text and "features.0.conv" in text and "act std" in text


def test_report_on_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["report", str(tmp_path)])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and "holds no runs" in " ".join(said.split()) and "Traceback" not in said


NO_FINDINGS = Finding("no_findings", "info", "no findings: these checks passed - divergence", "")
LEARNS_SLOWLY = Finding("update_ratio", "warning", "updates are only 1e-05 of the weights per step", "raise the lr")


def fake_sweep(root: Path, accuracy: dict[tuple[str, int], float], findings: dict[tuple[str, int], list[Finding]],
               curve: Callable[[int], list[tuple[int, float]]] = lambda batch: []) -> Path:
    """A finished norm x batch sweep's folder as its jobs leave it (metrics.json, the overrides), without training:
    `accuracy` and `findings` by (norm, batch), the train loss curve by batch."""
    for (norm, batch), acc in accuracy.items():
        job = root / f"batch={batch},norm={norm}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- norm={norm}\n- batch={batch}\n")
        write_metrics(job, RunMetrics(status="completed", final=Final(val_acc=acc, train_loss=curve(batch)[-1][1]
                                                                      if curve(batch) else 0.5),
                                      config={"batch": batch, "norm": {"name": norm}}, train_curve=curve(batch),
                                      findings=findings[norm, batch]))
    return root


BN_COLLAPSE = {("bn", 2): 0.45, ("bn", 32): 0.81, ("gn", 2): 0.79, ("gn", 32): 0.80}  # the lecture's numbers


def test_a_sweeps_report_says_its_own_findings_first_and_each_run_finding_once_naming_its_runs(tmp_path, capsys,
                                                                                            monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    findings = {job: [NO_FINDINGS] for job in BN_COLLAPSE}
    findings["bn", 2] = findings["gn", 2] = [LEARNS_SLOWLY]
    said = report([str(fake_sweep(tmp_path / "mixed", BN_COLLAPSE, findings))], capsys).splitlines()
    lines = [line for line in said if line.startswith(("error:", "warning:", "info:"))]
    assert lines == [
        "warning: the sweep: BN at batch 2: val accuracy 36 points below batch 32, while GN drops 1 over the same "
        "batches - use norm=gn (0.79 at batch 2), which measured better at batch 2 and does not depend on the batch",
        "warning: 2 runs (batch=2,norm=bn; batch=2,norm=gn): updates are only 1e-05 of the weights per step - raise "
        "the lr",
        "info: 2 runs (batch=32,norm=bn; batch=32,norm=gn): no findings: these checks passed - divergence"]
    same = fake_sweep(tmp_path / "same", BN_COLLAPSE, dict.fromkeys(BN_COLLAPSE, [NO_FINDINGS]))
    assert [f.message for f in report_findings(find_runs(same), [])] == [f"all 4 runs: {NO_FINDINGS.message}"]


def test_the_sweep_table_writes_numbers_as_the_rest_of_diagnose_and_never_nan(tmp_path):
    def run(b_simple: float, low: float, val_acc: float | None) -> RunRecord:
        noise = NoiseScale(b_simple=b_simple, b_simple_low=low, grad_sq=1.0, trace_cov=1.0, batch=8, micro_batch=8)
        return RunRecord(tmp_path, {}, RunMetrics(status="completed", noise=noise, final=Final(val_acc=val_acc)))

    assert cell(run(197.8465, 150.0, 0.81234), "b_simple") == about(197.8465) == "200"  # as the findings say it
    assert cell(run(197.8465, 150.0, 0.81234), "val_acc") == "0.8123"
    assert cell(run(math.nan, 41.3, math.nan), "b_simple") == ">= 41"  # not resolved: its lower bound
    assert cell(run(math.nan, math.nan, None), "b_simple") == "not resolved"
    assert cell(run(1.0, 1.0, math.nan), "val_acc") == cell(run(1.0, 1.0, None), "val_acc") == "-"
    table = Console(file=io.StringIO(), width=200, record=True)
    table.print(sweep_table([run(197.8465, 150.0, 0.8), run(math.nan, math.nan, math.nan)], [], "runs"))
    assert "nan" not in table.export_text().lower()


def findings_in_tensorboard(sweep: Path) -> str:
    (text,) = EventAccumulator(str(sweep / "sensitivity")).Reload().Tensors("findings/text_summary")
    return text.tensor_proto.string_val[0].decode()


def test_a_sweeps_findings_reach_tensorboard_and_two_batch_sizes_get_no_critical_batch_figure(tmp_path):
    sweep = fake_sweep(tmp_path, BN_COLLAPSE, dict.fromkeys(BN_COLLAPSE, [NO_FINDINGS]),
                       curve=lambda batch: [(step, 2.0 / step) for step in range(1, 50)])
    shown = Console(file=io.StringIO(), width=80, record=True)
    summarise_sweep(sweep, shown)
    printed = shown.export_text()
    text = findings_in_tensorboard(sweep)  # the sweep folder's run: `tensorboard --logdir SWEEP` lists it
    assert text.index("the sweep: BN at batch 2") < text.index(f"all 4 runs: {NO_FINDINGS.message}")
    assert json.loads((sweep / "findings.json").read_text())[0]["rule"] == "bn_small_batch"
    assert not (sweep / "critical_batch.png").exists() and not (sweep / "critical_batch.json").exists()
    assert "no critical batch: the fit of steps against batch size needs 3 batch sizes or more, this sweep has 2 " \
           "(2, 32)" in printed and "critical batch: steps" not in printed
    assert max(len(line) for line in printed.splitlines() if line.startswith(("┏", "┃", "│", "└"))) <= 80  # tables


def test_a_sweep_of_enough_batch_sizes_draws_the_critical_batch_with_a_title_that_says_what_is_drawn(tmp_path):
    # steps to loss 1 follow S(B) = 50 (1 + 64 / B): B_crit = 64 in the range swept
    batches = (16, 32, 64, 128, 256)
    sweep = fake_sweep(tmp_path, {("gn", b): 0.8 for b in batches}, {("gn", b): [NO_FINDINGS] for b in batches},
                       curve=lambda b: [(step, 2.0 ** (-step / (50 * (1 + 64 / b)))) for step in range(5, 800, 5)])
    shown = Console(file=io.StringIO(), width=80, record=True)
    summarise_sweep(sweep, shown)
    assert (sweep / "critical_batch.png").stat().st_size > 10_000 and "B_crit ~ 64 (fit)" in shown.export_text()
    (series,) = json.loads((sweep / "critical_batch.json").read_text())
    assert series["fit"]["b_crit"] == pytest.approx(64, rel=0.1)
    drawn = Series("gn", 0.5, fit=Fit(50.0, 3200.0, 64.0), steps=dict.fromkeys(batches, 1.0))
    title = "critical batch: steps to the target"
    assert critical_batch_figure([drawn]).axes[0].get_title() == f"{title} (fit, B_crit dashed)"
    drawn.fit, drawn.b_simple = None, {16: 90.0}
    assert critical_batch_figure([drawn]).axes[0].get_title() == f"{title} (median B_simple dotted)"


@pytest.mark.slow(seconds=7)
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_a_tiny_sweep(launcher, tmp_path):
    extra = ["hydra.launcher.timeout_min=5"] if launcher == "submitit_local" else ["hydra.launcher.n_jobs=2"]
    result = run_cli(["train", "-m", f"hydra/launcher={launcher}", *extra, *TINY, "norm=bn,gn"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir_of(tmp_path)
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")}
    assert status == {"norm=bn": "completed", "norm=gn": "completed"}
    assert (sweep / "summary.csv").exists()


@pytest.mark.slow
def test_the_local_launcher_runs_jobs_side_by_side_with_a_share_of_the_cores_each(tmp_path):
    result = run_cli(["train", "-m", "hydra/launcher=local", "hydra.launcher.workers=2", *SWEEP_TINY, "batch=4,8",
                      "norm=bn,gn"], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir_of(tmp_path)
    metrics = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert {name: m["status"] for name, m in metrics.items()} == dict.fromkeys(
        ["batch=4,norm=bn", "batch=4,norm=gn", "batch=8,norm=bn", "batch=8,norm=gn"], "completed")
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # threads=auto chose among 1 and the job's share
    assert all(1 <= threads <= share for m in metrics.values() for _, threads in m["threads"])
    assert (sweep / "summary.csv").exists() and "Traceback" not in result.stderr
    # the jobs share the terminal: each of their lines says whose it is
    steps = [line for line in result.stderr.splitlines() if "step " in line and "img/s" in line]
    assert steps and all(line.startswith(("[batch=4,norm=", "[batch=8,norm=")) for line in steps)


def processes_in(folder):
    """The processes whose working directory is `folder`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if os.readlink(proc / "cwd") == str(folder):
                found.append(int(proc.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm to the launcher"])
def test_a_stopped_local_sweep_saves_its_running_jobs_and_leaves_no_process(how, tmp_path):
    command = ["train", "-m", "hydra/launcher=local", "hydra.launcher.workers=2",
               *[o for o in SWEEP_TINY if not o.startswith("steps=")], "steps=100000", "batch=4,8,16,32"]
    # a session of its own: Ctrl-C reaches the launcher and its workers, as a terminal's would
    sweep = start_cli(command, tmp_path, session=True, sigint=True)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("outputs/multirun/**/events.out.tfevents.*"))) < 2:  # two jobs training
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    time.sleep(1)
    if how == "ctrl-c":  # a terminal's Ctrl-C reaches every process of the session
        os.killpg(sweep.pid, signal.SIGINT)
    else:  # `kill PID`: the launcher alone, which passes the stop on
        os.kill(sweep.pid, signal.SIGTERM)
    try:
        out, err = sweep.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # seen once in a full run, not reproduced: say what each job had done
        with contextlib.suppress(ProcessLookupError):  # not left training 100,000 steps beside the rest of the suite
            os.killpg(sweep.pid, signal.SIGKILL)
        out, err = sweep.communicate(timeout=30)
        logs = {p.parent.name: p.read_text()[-600:] for p in tmp_path.glob("outputs/multirun/**/train.log")}
        pytest.fail(f"the sweep did not end within 120 s of the {how}; it printed:\n{err[-3000:]}\njobs' logs: {logs}")
    assert sweep.returncode == 130, err
    said = " ".join(err.split())
    assert "Interrupted: the running jobs stopped and saved" in said and "Traceback" not in said
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep_dir_of(tmp_path).glob("*/metrics.json")}
    assert status == {"batch=4": "interrupted", "batch=8": "interrupted"}  # the other two never started
    assert all((sweep_dir_of(tmp_path) / name / "checkpoint.pt").exists() for name in status)
    deadline = time.monotonic() + 10
    while processes_in(tmp_path) and time.monotonic() < deadline:  # the workers are gone with the launcher
        time.sleep(0.2)
    assert not processes_in(tmp_path)


@pytest.mark.slow
def test_optuna_searches_the_learning_rate(tmp_path):
    result = run_cli(["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                      "hydra.sweeper.direction=maximize", "lr=interval(0.01,0.5)", *TINY], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir_of(tmp_path)
    lrs = {json.loads(p.read_text())["config"]["lr"] for p in sweep.glob("*/metrics.json")}
    assert len(lrs) == 3 and all(0.01 <= lr <= 0.5 for lr in lrs)
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()


@pytest.mark.slow(seconds=9)
def test_batchnorm_collapses_at_batch_2_while_groupnorm_does_not(tmp_path):
    """The lecture's BN-vs-GN result on real data: an MLP, where BatchNorm1d at batch 2 normalises each
    feature over two numbers. Same epochs at each batch size, lr scaled linearly with the batch."""
    needs_fashion()
    result = run_cli(["train", "-m", "model=mlp", "data=fashion_mnist", "data.subset=5000", "data.download=false",
                      "epochs=1", "diag=off", "device=cpu", "norm=bn,gn", "batch=2,32"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = csv.DictReader((sweep_dir_of(tmp_path) / "summary.csv").open())
    acc = {(r["norm"], int(r["batch"])): float(r["val_acc"]) for r in rows}
    # measured over seeds 0-2: BN 0.41-0.49 at batch 2 vs 0.81-0.82 at 32; GN 0.78-0.80 at both
    assert acc["bn", 2] < acc["bn", 32] - 0.2
    assert abs(acc["gn", 2] - acc["gn", 32]) < (acc["bn", 32] - acc["bn", 2]) / 3


@pytest.mark.slow  # a 4-job sweep, ~6 s
def test_the_sweeper_composes_only_the_jobs_the_command_lines_check_did_not_see(tmp_path, monkeypatch):
    """Hydra's basic sweeper composes every job before the first starts (~0.1 s each); diagnose's check of the
    command line has checked them already, so the sweeper composes one job only, for the hydra.* settings."""
    import inspect

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from diagnose.cli.overrides import check_command_line, checked_already

    before_launch = []  # the jobs composed to be checked, before the launcher composes each to run it
    load_sweep_config = ConfigLoaderImpl.load_sweep_config

    def spied(self, master_config, sweep_overrides):
        if any(frame.function == "validate_batch_is_legal" for frame in inspect.stack()):
            before_launch.append(list(sweep_overrides))
        return load_sweep_config(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", spied)
    monkeypatch.chdir(tmp_path)
    main(["train", "-m", *SWEEP_TINY, "norm=bn,gn", "batch=8,16", "lr=1e-3"])
    assert len(list(sweep_dir_of(tmp_path).glob("*/metrics.json"))) == 4  # every job ran
    assert len(before_launch) == 1
    assert checked_already("train", before_launch[0]) and not checked_already("probe", before_launch[0])

    check_command_line("train", ["-m", "model.widths=[8,8,8]", "model.widths.2=4,16"])  # Hydra's order: the last wins
    assert checked_already("train", ["model.widths=[8,8,8]", "model.widths.2=16"])
    assert not checked_already("train", ["model.widths.2=16", "model.widths=[8,8,8]"])
    with pytest.raises(UserError):
        check_command_line("train", ["-m", "norm=bn,gn", "lr=-1"])
    assert not checked_already("train", ["norm=bn", "lr=-1"])  # a command line that fails leaves nothing checked
