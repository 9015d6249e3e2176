"""The diagnose tab in TensorBoard: what its routes answer for a run, a probe and a sweep, checked against what the
runs wrote (metrics.json, the event files read on their own), through TensorBoard's data provider in-process, a real
TensorBoard server on 127.0.0.1, and headless Chromium drawing the page."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import test_sweeps
from conftest import TINY, TINY_DATA, compose_config, scalars
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.diagnostics.layers import depth_labels, measured_layers
from diagnose.probe import probe
from diagnose.results import Evaluation, Final, Finding, NonFinite, RunMetrics
from diagnose.sweep.critical_batch import critical_batches
from diagnose.sweep.runs import RunRecord
from diagnose.tab.batch import batch_charts
from diagnose.tab.charts import LOG, LOG2, as_json
from diagnose.tab.depth import depth_view
from diagnose.tab.events import Events, layer_of
from diagnose.tab.findings import findings_view
from diagnose.tab.steps import steps_charts
from diagnose.tab.targets import PROBE, RUN, SWEEP, Target, scan
from diagnose.training.loop import train

bn_gn_sweep = test_sweeps.bn_gn_sweep  # the one sweep the suite makes, shared
PROBE_OVERRIDES = ["device=cpu", "model.depth=6", "model.width=64", "probe.batch=128", "probe.jacobian_examples=4"]


# session-wide: the slow tests run first (conftest.py), and a module fixture would be made again for the others
@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> Path:
    """A logdir as a user has one: a run that measured everything (per-layer statistics, dead units, curvature, the
    noise scale), a probe and a probe sweep (LeCun vs Kaiming); ~5 s."""
    root = tmp_path_factory.mktemp("tab")
    cfg = compose_config([*TINY_DATA, "model=mlp", "model.depth=3", "model.width=16", "steps=8", "diag.every=2",
                          "diag.probe_every=2", "diag.curvature_every=4", "diag.curvature_batch=32",
                          "diag.curvature_iterations=5", "diag.noise_every=4", "diag.noise_batch=64",
                          "diag.noise_micro=16"])
    train(build_run(cfg), root / "run", to_dict(cfg))
    probe(compose_config([*PROBE_OVERRIDES, "act=tanh", "init=normal", "init.std=0.5"], "probe"), root / "probe")
    for init in ("lecun_normal", "kaiming_normal"):
        probe(compose_config([*PROBE_OVERRIDES, f"init={init}"], "probe"), root / "probes" / f"init={init}")
    (root / "probes" / "multirun.yaml").write_text("{}\n")  # what Hydra leaves in a sweep's folder
    return root


@pytest.fixture(scope="session")
def with_sweep(logdir, bn_gn_sweep) -> Path:
    """The same logdir with the suite's BN/GN sweep in it, under sweep/."""
    if not (logdir / "sweep").exists():
        shutil.copytree(bn_gn_sweep[0], logdir / "sweep")
    return logdir


def in_process(logdir: Path) -> Events:
    """TensorBoard's own data provider over `logdir`, without a server."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return Events(data_provider.MultiplexerDataProvider(multiplexer, str(logdir)), context.RequestContext(), "")


@pytest.fixture(scope="session")
def events(logdir) -> Events:
    return in_process(logdir)


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow  # the sweep it reads takes ~7 s
def test_the_logdir_is_scanned_into_runs_probes_and_sweeps_with_their_jobs(with_sweep):
    logdir = with_sweep
    found = scan(logdir)
    kinds = {target.id: target.kind for target in found.targets.values()}
    assert kinds == {"run": RUN, "probe": PROBE, "probes": SWEEP, "probes/init=lecun_normal": PROBE,
                     "probes/init=kaiming_normal": PROBE, "sweep": SWEEP, "sweep/batch=8,norm=bn": RUN,
                     "sweep/batch=8,norm=gn": RUN, "sweep/batch=16,norm=bn": RUN, "sweep/batch=16,norm=gn": RUN}
    assert found.targets["sweep/batch=8,norm=gn"].sweep == "sweep" and found.targets["probes"].probes
    assert found.default in kinds  # the newest that is not a job
    assert scan(logdir / "sweep").default == "."  # a sweep opened on its own: itself
    assert set(scan(logdir / "sweep" / "batch=8,norm=bn").targets) == {"."}  # one job alone: no sweep above it
    assert scan(logdir / "missing").targets == {}


def test_depth_labels_are_read_back_as_they_are_written():
    run = build_run(compose_config([*TINY_DATA, "model=mlp", "model.depth=11", "model.width=4", "threads=1"]))
    for name, label in depth_labels(measured_layers(run.model, run.act, run.norm)).items():
        metric, depth, module = layer_of(f"act_std/{label}")
        assert (metric, module) == ("act_std", name) and label.startswith(f"{depth:02d} ")
    assert layer_of("train/loss") is None and layer_of("probe/act_std") is None


def test_a_runs_findings_are_its_metrics_json_own(logdir):
    found = scan(logdir).targets
    for target in ("run", "probe"):
        assert as_json(findings_view(found[target]))["own"] == metrics_of(logdir / target)["findings"]


@pytest.mark.slow  # the sweep it reads takes ~7 s
def test_a_sweeps_findings_are_its_own_and_its_jobs(with_sweep):
    logdir = with_sweep
    sweep = findings_view(scan(logdir).targets["sweep"])
    assert as_json(sweep)["own"] == json.loads((logdir / "sweep" / "findings.json").read_text())
    jobs = {(group.rule, item.job): as_json(item.finding) for group in sweep.jobs for item in group.jobs}
    written = {(f["rule"], job.parent.name): f for job in (logdir / "sweep").glob("*/metrics.json")
               for f in metrics_of(job.parent)["findings"]}
    assert jobs == written  # every job's finding, once, by rule


def test_a_sweeps_findings_are_grouped_by_rule_most_severe_first():
    def run(name: str, *findings: Finding) -> RunRecord:
        return RunRecord(Path(name), {}, RunMetrics("completed", findings=list(findings)))

    dead = Finding("dead_relu", "warning", "dead", "fix")
    broke = Finding("diverged", "error", "diverged", "lower the lr")
    target = Target("s", SWEEP, [run("a", dead), run("b", dead, broke), run("c", Finding("x", "info", "", ""))],
                    path=Path("/nowhere"))
    target.runs[1].metrics.status, target.runs[1].metrics.nonfinite = "diverged", NonFinite(7, "loss", "loss")
    view = findings_view(target)
    assert [(g.rule, g.severity, [j.job for j in g.jobs]) for g in view.jobs] == [
        ("diverged", "error", ["b"]), ("dead_relu", "warning", ["a", "b"]), ("x", "info", ["c"])]
    assert view.own == [] and not view.sweep_file and view.job_count == 3
    # a job that did not complete says so first, with where it went wrong
    assert [(u.job, u.status, u.why) for u in view.unfinished] == [
        ("b", "diverged", "first non-finite value at step 7, in the loss")]


def test_a_runs_depth_profile_is_every_measured_step_of_its_per_layer_scalars(logdir, events):
    profile = depth_view(scan(logdir).targets["run"], events).profile
    written = scalars(logdir / "run")  # the event file, read on its own
    assert profile.steps == [step for step, _ in written["act_std/features.0.act"]]
    assert profile.steps[0] == 1 and profile.epochs[-1] == pytest.approx(metrics_of(logdir / "run")["epochs"])
    assert [panel.metric for panel in profile.panels] == ["act_std", "grad_norm", "update_ratio"]
    assert all(panel.y_scale == LOG for panel in profile.panels)
    by_metric = {panel.metric: {line.group: line for line in panel.lines} for panel in profile.panels}
    acts = by_metric["act_std"]["act"]
    assert acts.layers == ["features.0.act", "features.1.act", "features.2.act"]
    for depth, layer in enumerate(acts.layers):
        assert [row[depth] for row in acts.values] == pytest.approx([v for _, v in written[f"act_std/{layer}"]])
    final = metrics_of(logdir / "run")["layers"]
    assert [row for row in by_metric["grad_norm"]["weight"].values[-1]] == pytest.approx(
        [final[name]["grad_norm"] for name in by_metric["grad_norm"]["weight"].layers])
    assert set(by_metric["update_ratio"]) == {"weight"}  # a weight's metric: conv/linear layers only


def test_a_run_that_measured_no_layers_has_no_profile(tmp_path):
    cfg = compose_config([*TINY, "diag=off"])
    train(build_run(cfg), tmp_path / "off", to_dict(cfg))
    view = depth_view(scan(tmp_path).targets["off"], in_process(tmp_path))
    assert view.profile is None and view.charts == []


def test_a_probe_is_drawn_against_depth_beside_the_theory(logdir, events):
    charts = {chart.title: chart for chart in depth_view(scan(logdir).targets["probe"], events).charts}
    written = metrics_of(logdir / "probe")
    std = charts["std of the output"]
    assert std.y_scale == LOG
    acts = next(s for s in std.series if s.group == "act" and not s.dash)
    assert acts.names == [n for n, layer in written["layers"].items() if layer["role"] == "act"]
    assert acts.y == pytest.approx([written["layers"][n]["act_std"] for n in acts.names])
    # the probe's own series against depth, read from its event file, are the same numbers
    assert acts.y == pytest.approx([v for _, v in scalars(logdir / "probe")["probe/act_std"]])
    flat = next(s for s in std.series if s.dash)
    assert flat.y == [acts.y[0]] * len(acts.y)  # a variance-preserving init: the first layer's std at every depth
    jacobian = next(c for t, c in charts.items() if "mean squared singular value" in t)
    measured, predicted = jacobian.series
    spectrum = written["jacobian"]
    assert measured.y == pytest.approx([row[1] for row in spectrum["depths"]])
    chi = spectrum["chi_predicted"]
    assert predicted.y == pytest.approx([measured.y[0] * chi ** d for d in range(len(measured.y))])
    spread = next(c for t, c in charts.items() if "spread" in t)
    assert spread.series[0].y == pytest.approx([row[2] for row in spectrum["depths"]])


def test_a_probe_sweep_puts_its_probes_side_by_side(logdir, events):
    charts = depth_view(scan(logdir).targets["probes"], events).charts
    std = charts[0]
    lines = {s.label: s.y for s in std.series if not s.dash}
    assert set(lines) == {"init=lecun_normal", "init=kaiming_normal"}
    for name, values in lines.items():
        assert values == pytest.approx([v for _, v in scalars(logdir / "probes" / name)["probe/act_std"]])
    # LeCun's 1/N halves a ReLU net's variance a layer: its std ends far below Kaiming's
    assert lines["init=lecun_normal"][-1] < 0.3 * lines["init=kaiming_normal"][-1]
    assert steps_charts(scan(logdir).targets["probes"], events) == []


@pytest.mark.slow  # the sweep it reads takes ~7 s
def test_a_sweeps_depth_profile_shows_each_job_at_init_and_at_its_end(with_sweep):
    logdir = with_sweep
    charts = depth_view(scan(logdir).targets["sweep"], in_process(logdir)).charts
    std = charts[0]
    assert len(std.series) == 8  # 4 jobs, last and init
    last = next(s for s in std.series if s.label == "batch=8,norm=gn (last)")
    written = scalars(logdir / "sweep" / "batch=8,norm=gn")
    assert last.y == pytest.approx([written[f"act_std/{n}"][-1][1] for n in last.names])


def test_over_steps_every_point_unsmoothed(logdir, events):
    charts = {chart.title: chart for chart in steps_charts(scan(logdir).targets["run"], events)}
    written = scalars(logdir / "run")
    loss = {s.label: s for s in charts["loss"].series}
    assert loss["train"].x == [step for step, _ in written["train/loss"]]
    assert loss["train"].y == pytest.approx([value for _, value in written["train/loss"]])
    assert charts["loss"].y_scale == LOG
    chance = next(s for s in charts["accuracy"].series if s.group == "chance")
    assert chance.dash and chance.y == [1 / metrics_of(logdir / "run")["classes"]] * 2
    dead = charts["dead ReLU units on the probe batch"]
    assert [s.label for s in dead.series] == ["01 features.0.act", "02 features.1.act", "03 features.2.act"]
    assert dead.y_range == (0.0, 1.0)
    assert dead.series[0].y == pytest.approx([v for _, v in written["dead/features.0.act"]])
    curvature = next(c for t, c in charts.items() if "λ_max" in t)
    assert curvature.y_scale == LOG and [s.dash for s in curvature.series] == [False, True]
    history = metrics_of(logdir / "run")["curvature"]["history"]
    assert curvature.series[0].y == pytest.approx([h[1] for h in history])
    assert curvature.series[1].y == pytest.approx([h[3] for h in history])
    noise = next(c for t, c in charts.items() if "B_simple" in t)
    assert "noise/batch" in written and any(s.label == "batch" for s in noise.series)


@pytest.mark.slow  # the sweep it reads takes ~7 s
def test_a_batch_sweep_is_drawn_against_the_batch_on_a_log2_axis(with_sweep):
    logdir = with_sweep
    target = scan(logdir).targets["sweep"]
    charts = {chart.title: chart for chart in batch_charts(target)}
    accuracy = charts["final val accuracy against batch size"]
    assert accuracy.x_scale == LOG2
    jobs = {job.parent.name: metrics_of(job.parent) for job in (logdir / "sweep").glob("*/metrics.json")}
    for series in accuracy.series:
        assert series.x == [8, 16]
        assert series.y == pytest.approx([jobs[f"batch={b},{series.label}"]["final"]["val_acc"] for b in (8, 16)])
    modes = next(c for t, c in charts.items() if t.startswith("BN"))
    train_mode = next(s for s in modes.series if s.label == "norm=bn: train mode")
    assert train_mode.dash and train_mode.y == pytest.approx(
        [jobs[f"batch={b},norm=bn"]["history"][-1]["val_acc_bn_train_mode"] for b in (8, 16)])
    assert not any("critical" in t for t in charts)  # two batch sizes: nothing to fit
    steps = steps_charts(target, in_process(logdir))
    assert steps[0].x_label == "epoch"  # batch 8 and 16 take different steps an epoch: the jobs side by side by epoch
    assert batch_charts(scan(logdir).targets["run"]) == []


def test_seeds_are_a_band_and_the_critical_batch_is_fitted_where_three_batch_sizes_are():
    def job(batch: int, seed: int, norm: str, acc: float) -> RunRecord:
        # steps to a loss of 1 follow S(B) = 100 + 6400 / B exactly: B_crit = E_min / S_min = 64
        steps = 100 + 6400 / batch
        curve = [(int(steps / 2), 1.5), (int(steps), 1.0)]  # the loosest run's best loss is the target: 1.0
        metrics = RunMetrics("completed", final=Final(val_acc=acc, train_loss=0.5), train_curve=curve,
                             history=[Evaluation(1, 1.0, 0.5, acc)])
        return RunRecord(Path(f"/nowhere/batch={batch},norm={norm},seed={seed}"),
                         {"batch": batch, "norm": norm, "seed": seed}, metrics)

    runs = [job(b, s, n, 0.5 + 0.1 * s + (0.01 * b if n == "bn" else 0)) for b in (16, 64, 256) for s in (0, 1, 2)
            for n in ("bn", "gn")]
    charts = {c.title: c for c in batch_charts(Target("s", SWEEP, runs, path=Path("/nowhere")))}
    bn = next(s for s in charts["final val accuracy against batch size"].series if s.label == "norm=bn")
    assert bn.y == pytest.approx([0.6 + 0.01 * b for b in (16, 64, 256)])  # the mean over seeds 0.5, 0.6, 0.7
    assert bn.low == pytest.approx([0.5 + 0.01 * b for b in (16, 64, 256)])
    assert bn.high == pytest.approx([0.7 + 0.01 * b for b in (16, 64, 256)])
    critical = next(c for t, c in charts.items() if t.startswith("critical batch"))
    assert critical.x_scale == LOG2 and critical.y_scale == LOG
    b_crit = {mark.group: mark.x for mark in critical.marks}
    assert b_crit == pytest.approx({"norm=bn": 64, "norm=gn": 64}, rel=0.05)
    fit = next(s for s in critical.series if s.label == "norm=bn: fit")
    assert fit.y[0] == pytest.approx(100 + 6400 / 16, rel=0.05) and fit.x[-1] == 256
    assert len(critical_batches(runs, ["batch", "norm", "seed"])) == 2


def test_the_answers_are_strict_json():
    assert as_json({"a": [math.nan, math.inf, 1.5], "b": (1, None)}) == {"a": [None, None, 1.5], "b": [1, None]}


# ---- through a real TensorBoard


def serve(logdir: Path) -> tuple[subprocess.Popen, str]:
    """`tensorboard --logdir` on a free port of 127.0.0.1, at its default settings; its base URL."""
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                               "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    for line in server.stdout:
        if match := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
            return server, match.group(1)
    server.kill()
    raise AssertionError("tensorboard did not start")


@pytest.fixture(scope="session")
def tensorboard(with_sweep):
    server, base = serve(with_sweep)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(base: str, route: str, **args: str) -> object:
    query = "?" + urllib.parse.urlencode(args) if args else ""
    with urllib.request.urlopen(f"{base}/data/plugin/diagnose/{route}{query}", timeout=60) as response:
        return json.load(response)


@pytest.mark.slow  # starts TensorBoard (~5 s)
def test_a_real_tensorboard_serves_the_tab_and_its_routes(tensorboard, with_sweep):
    logdir = with_sweep
    with urllib.request.urlopen(f"{tensorboard}/data/plugins_listing", timeout=60) as response:
        listing = json.load(response)["diagnose"]
    assert listing["enabled"] and listing["loading_mechanism"] == {
        "type": "IFRAME", "module_path": "/data/plugin/diagnose/static/index.js"}
    with urllib.request.urlopen(f"{tensorboard}/data/plugin/diagnose/static/uPlot.esm.js", timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")  # an ES module must be served as JS
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{tensorboard}/data/plugin/diagnose/static/..%2Fplugin.py", timeout=60)
    targets = get(tensorboard, "targets")
    assert {t["id"] for t in targets["targets"]} >= {"run", "probe", "probes", "sweep", "sweep/batch=8,norm=bn"}
    assert get(tensorboard, "findings", target="run")["own"] == metrics_of(logdir / "run")["findings"]
    profile = get(tensorboard, "depth", target="run")["profile"]
    final = metrics_of(logdir / "run")["layers"]
    acts = next(line for line in profile["panels"][0]["lines"] if line["group"] == "act")
    assert acts["values"][-1] == pytest.approx([final[name]["act_std"] for name in acts["layers"]])
    batch = get(tensorboard, "batch", target="sweep")
    bn = next(s for s in batch[0]["series"] if s["label"] == "norm=bn")
    assert bn["y"] == pytest.approx([metrics_of(logdir / "sweep" / f"batch={b},norm=bn")["final"]["val_acc"]
                                     for b in (8, 16)])
    probe_charts = get(tensorboard, "depth", target="probe")["charts"]
    assert any("Jacobian" in chart["title"] for chart in probe_charts)
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(tensorboard, "depth", target="nowhere")
    assert missing.value.code == 404


# ---- drawn by headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def drawn(frame) -> list[dict]:
    """What uPlot drew: each chart's title, its series' labels, its axes' kinds and the data it holds."""
    return frame.evaluate("""() => window.diagnose.charts.map(({title, u}) => ({
        title, labels: u.series.slice(1).map(s => s.label), x: u.scales.x.distr, y: u.scales.y.distr,
        ylog: u.scales.y.log, xlog: u.scales.x.log, data: u.data}))""")


def needs_browser() -> object:
    """playwright's sync API, to drive the system's Chromium; a skip where either is missing, a failure in CI
    (DIAGNOSE_BROWSER=required), which installs both."""
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    if CHROMIUM is None or sync_api is None:
        message = "the browser test needs chromium (apt-get install chromium) and playwright (pip install playwright)"
        pytest.fail(message) if os.environ.get("DIAGNOSE_BROWSER") == "required" else pytest.skip(message)
    return sync_api


@pytest.mark.slow  # starts TensorBoard and Chromium (~15 s)
def test_chromium_draws_the_tab_for_a_run_a_probe_and_a_sweep(tensorboard, with_sweep):
    logdir = with_sweep
    sync_api = needs_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.goto(f"{tensorboard}/#diagnose")
        frame = page.wait_for_selector("iframe", timeout=60_000).content_frame()
        frame.wait_for_selector("body[data-drawn]", timeout=60_000)

        def show(target: str) -> dict[str, dict]:
            frame.select_option("#target", target)
            frame.wait_for_function(f"document.body.dataset.drawn === {target!r}", timeout=60_000)
            return {chart["title"]: chart for chart in drawn(frame)}

        sweep = show("sweep")
        accuracy = sweep["final val accuracy against batch size"]
        assert (accuracy["x"], accuracy["xlog"]) == (3, 2)  # a log2 batch axis
        assert accuracy["labels"] == ["norm=bn", "norm=gn"] and accuracy["data"][0] == [8, 16]
        bn = metrics_of(logdir / "sweep" / "batch=8,norm=bn")["final"]["val_acc"]
        assert accuracy["data"][1][0] == pytest.approx(bn)  # BN at batch 8 where it is, not smoothed
        # its value on hover: the cursor on that point puts it into the chart's legend
        chart = 'window.diagnose.charts.find(c => c.title === "final val accuracy against batch size").u'
        x, y = frame.evaluate(f"""() => {{ const u = {chart}, box = u.over.getBoundingClientRect();
            return [box.left + u.valToPos(u.data[0][0], "x"), box.top + u.valToPos(u.data[1][0], "y")]; }}""")
        left, top = page.eval_on_selector("iframe", "f => [f.getBoundingClientRect().x, f.getBoundingClientRect().y]")
        page.mouse.move(left + x, top + y)
        shown = frame.evaluate(f"() => {chart}.root.querySelectorAll('.u-series')[1].querySelector('.u-value')"
                               ".textContent")
        assert float(shown) == pytest.approx(bn, abs=5e-4)
        assert "Findings" in frame.inner_text("main") and frame.locator(".finding").count() >= 1

        run = show("run")
        std = run["std of the output"]
        assert (std["y"], std["ylog"]) == (3, 10)  # log y
        assert std["labels"] == ["conv/linear layers", "conv/linear layers at initialisation", "norm layers",
                                 "norm layers at initialisation", "activations", "activations at initialisation"]
        now, init = std["labels"].index("activations") + 1, std["labels"].index("activations at initialisation") + 1
        final = metrics_of(logdir / "run")["layers"]
        assert std["data"][now][:3] == pytest.approx([final[f"features.{i}.act"]["act_std"] for i in range(3)])
        first = scalars(logdir / "run")["act_std/features.0.act"][0][1]
        assert std["data"][init][0] == pytest.approx(first)
        frame.fill("input[type=range]", "0")  # the slider to initialisation: the solid line moves onto the dashed
        at_init = {c["title"]: c for c in drawn(frame)}["std of the output"]
        assert at_init["data"][now] == pytest.approx(at_init["data"][init]) and at_init["data"][now][0] == \
            pytest.approx(first)
        assert {"loss", "accuracy", "dead ReLU units on the probe batch"} <= set(run)

        probe_view = show("probe")
        jacobian = next(chart for title, chart in probe_view.items() if "mean squared singular value" in title)
        assert jacobian["y"] == 3 and len(jacobian["labels"]) == 2  # measured and χ₁'s prediction
        spectrum = metrics_of(logdir / "probe")["jacobian"]["depths"]
        assert jacobian["data"][1] == pytest.approx([row[1] for row in spectrum])
        browser.close()


def test_the_tab_reads_no_chart_library_from_the_network():
    page = (Path(__file__).parent.parent / "diagnose" / "tab" / "static" / "index.js").read_text()
    assert re.findall(r"""(?:import|from)\s+["']([^"']+)""", page) == ["./uPlot.esm.js"]
    assert "http" not in re.sub(r"//.*", "", page)  # no URL but its own routes

