"""What a run writes for TensorBoard, read back from the event file and through a real TensorBoard server."""

import json
import math
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import test_sweeps
import torch
from conftest import FASHION, TINY, TINY_DATA, compose_config, events_of, needs_fashion, scalars, tags
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from diagnose.build import build_model, build_run
from diagnose.config import to_dict
from diagnose.diagnostics.dashboard import custom_scalars_layout
from diagnose.diagnostics.depth import PANELS, DepthPlot, depth_figure
from diagnose.diagnostics.layer_stats import Schedule
from diagnose.diagnostics.layers import depth_labels, measured_layers
from diagnose.diagnostics.writing import png_of
from diagnose.training.loop import train

LAYERS = ["features.0.conv", "features.0.norm", "features.0.act", "features.2.conv", "features.2.act"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny run of a CNN with BatchNorm and every diagnostic on."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config(TINY + ["diag=full", "steps=12", "diag.probe_every=4", "log_every=4", "diag.landscape=true",
                                 "diag.landscape_every=6"])
    train(build_run(cfg), out, to_dict(cfg))
    return out


def test_the_event_file_holds_every_per_layer_metric(run_dir):
    found = tags(run_dir)
    series = found["scalars"]
    for layer in LAYERS:
        assert {f"act_std/{layer}", f"grad_norm/{layer}", f"grad_norm_log10/{layer}", f"grad_std/{layer}"} <= series
    assert {"act_mean/features.0.act", "act_zero/features.0.act"} <= series
    assert "act_zero/features.0.conv" not in series  # exact zeros tell something only of a ReLU's output
    for layer in ("features.0.conv", "features.2.conv", "head.fc"):
        assert {f"weight_norm/{layer}", f"weight_grad_norm/{layer}", f"update_ratio/{layer}",
                f"update_ratio_log10/{layer}", f"sign_agreement/{layer}"} <= series
    assert {"dead/features.0.act", "dead_permanent/features.2.act", "bn_shift/features.0.norm",
            "bn_var_ratio/features.2.norm", "bn/val_acc_train_mode", "bn/val_acc_eval_mode",
            "reference/update_ratio", "reference/update_ratio_log10"} <= series
    values = scalars(run_dir)
    for tag in ("landscape/loss_range", "landscape/grad_change_range", "landscape/beta"):
        assert [step for step, _ in values[tag]] == [6, 12], tag  # every diag.landscape_every steps
    assert values["reference/update_ratio_log10"][0][1] == pytest.approx(-3)
    assert {"act/features.0.act", "grad/features.0.conv", "weight/features.2.conv",
            "weight_grad/head.fc"} <= found["histograms"]
    assert "depth/act_std_and_grad_norm" in found["images"]
    assert "custom_scalars__config__" in found["tensors"]


def test_tags_carry_the_layers_depth_so_charts_read_in_forward_order(run_dir):
    raw = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert "act_std/01 features.0.conv" in raw and "act_std/03 head.fc" in raw  # the third conv/linear layer
    assert "act_std/02 features.2.act" in raw
    deep = [f"features.{i}.act" for i in range(12)]
    labels = depth_labels(measured_layers(mlp(12), *entries()))
    assert sorted(labels[name] for name in deep) == [labels[name] for name in deep]  # 10 after 9, not after 1


def mlp(depth: int):
    return build_run(compose_config(TINY_DATA + ["model=mlp", f"model.depth={depth}", "model.width=8"])).model


def entries():
    from diagnose.components.activations import ACTIVATIONS
    from diagnose.components.norms import NORMS

    return ACTIVATIONS["relu"], NORMS["bn"]


def mlp_layers(depth: int) -> list:
    """The measured layers of an MLP of `depth` hidden layers, built without its data."""
    config = compose_config(TINY_DATA + ["model=mlp", f"model.depth={depth}", "model.width=8"])
    model = build_model(config, (1, 8, 8), 10)
    return measured_layers(model, *entries())


def test_the_depth_figure_draws_the_logits_as_a_point_of_their_own_not_on_the_conv_linear_line():
    layers = mlp_layers(30)
    weights = [layer.name for layer in layers if layer.role == "weight"]
    assert len(weights) == 31 and weights[-1] == "head"
    now = {f"{metric}/{layer.name}": 0.5 + depth for depth, layer in enumerate(layers) for metric, _ in PANELS}
    now["act_std/head"] = 1e4  # logits far above the signal: on the line they would be a cliff
    figure = depth_figure(layers, now, {key: 2 * value for key, value in now.items()}, "run, step 9")
    for ax, (metric, _) in zip(figure.axes, PANELS, strict=False):
        lines = {line.get_label(): line for line in ax.get_lines()}
        conv = lines["conv/linear layers (now)"]
        assert list(conv.get_xdata()) == list(range(1, 31))  # the 30 hidden layers, the head not among them
        assert list(conv.get_ydata()) == [now[f"{metric}/{name}"] for name in weights[:-1]]
        logits = lines["logits, head (now)"]
        assert list(logits.get_xdata()) == [31] and logits.get_linestyle() == "None"  # a marker, no line
        assert list(logits.get_ydata()) == [now[f"{metric}/head"]]
        assert list(lines["logits, head (at init)"].get_ydata()) == [2 * now[f"{metric}/head"]]


def test_a_redrawn_depth_figure_is_the_image_of_one_built_afresh():
    layers = mlp_layers(4)
    plot = DepthPlot(layers)
    for seed in range(6):  # a run's figures: one has nothing finite to draw in a panel, one nothing at all
        values = 10 ** (11 * torch.rand(2 * len(layers), generator=torch.Generator().manual_seed(seed)) - 8)
        now = {f"{metric}/{layer.name}": values[2 * i + k].item() for i, layer in enumerate(layers)
               for k, (metric, _) in enumerate(PANELS)}
        if seed == 2:
            now.update({tag: math.nan for tag in now if tag.startswith("grad_norm/")})
        if seed == 4:
            now = {tag: math.inf for tag in now}
        first = {tag: 3 * value for tag, value in now.items()}
        title = f"run, step {seed}"
        assert png_of(plot.show(now, first, title)) == png_of(depth_figure(layers, now, first, title)), seed


def test_a_long_run_name_is_shortened_in_the_middle_to_fit_the_depth_figure():
    layers = mlp_layers(2)
    values = {f"{metric}/{layer.name}": 1.0 for layer in layers for metric, _ in PANELS}
    name = "2026-12-03/10-00-00_" + ",".join(f"key{i}=value{i}" for i in range(30))
    figure = depth_figure(layers, values, values, f"{name}, step 1500")
    title = figure._suptitle
    shown = title.get_text()
    assert shown.startswith("2026-12-03/10-00-00_key0") and shown.endswith("key29=value29, step 1500")
    assert "…" in shown and len(shown) < len(name)
    box = title.get_window_extent(figure.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width  # neither end cut off
    short = depth_figure(layers, values, values, "10-00-00_norm=gn, step 3")
    assert short._suptitle.get_text() == "10-00-00_norm=gn, step 3"


def test_full_diagnostics_measure_every_step(run_dir):
    values = scalars(run_dir)
    assert [step for step, _ in values["act_std/features.0.act"]] == list(range(1, 13))
    # the probe at initialisation and often enough for 5 points: every 3 steps here, below probe_every=4
    assert [step for step, _ in values["dead/features.0.act"]] == [1, 3, 6, 9, 12]


@pytest.mark.parametrize(("every", "last", "measured"), [
    (100, 78, [1, *range(6, 77, 6), 78]),  # a short run: 15 points, not one
    (100, 5000, [1, *range(100, 5001, 100)]),  # a long one: every 100 steps
    (0, 78, []),  # diag=off measures nothing
])
def test_every_run_is_measured_at_init_often_enough_for_a_curve_and_at_the_end(every, last, measured):
    schedule = Schedule(every=every, last=last)
    assert [step for step in range(1, last + 1) if schedule.stats(step)] == measured


def test_the_layout_has_only_charts_this_model_fills_each_of_one_kind_of_layer():
    def titles(*overrides: str) -> dict[str, dict]:
        run = build_run(compose_config(TINY + list(overrides)))
        layout = custom_scalars_layout(measured_layers(run.model, run.act, run.norm))
        return {title: chart for charts in layout.values() for title, chart in charts.items()}

    relu_bn = titles("act=relu", "norm=bn")
    assert list(custom_scalars_layout([]))[0] == "training"  # loss and accuracy first
    assert {"dead ReLU units on the probe batch", "BN batch var / running var"} <= set(relu_bn)
    assert not [t for t in relu_bn if "saturated" in t or "rho" in t]
    sigmoid = titles("act=sigmoid", "norm=none")
    assert "saturated fraction" in sigmoid
    assert not [t for t in sigmoid if "dead" in t or "BN" in t or "exact zeros" in t]
    assert "Batch-Instance Norm rho (1 = BN, 0 = IN)" in titles("norm=bin")
    # one kind of layer a chart, the logits on their own, and what spans decades as log10 with its reference line
    assert relu_bn["std of the output: activations"][1] == [r"^act_std/(01\ features\.0\.act|02\ features\.2\.act)$"]
    assert "head" not in relu_bn["std of the output: conv/linear layers"][1][0]
    update_ratio = relu_bn["log10 update / weight ratio per step (line: 1e-3, healthy)"]
    assert update_ratio[1][1] == "^reference/update_ratio_log10$"


def layout_of(run_dir: Path) -> layout_pb2.Layout:
    """The Custom Scalars layout a run wrote into its event file."""
    (event,) = events_of(run_dir).Tensors("custom_scalars__config__")
    return layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])


@pytest.mark.parametrize("diag", [["diag=off"], ["diag.every=0"], ["diag.probe_every=0", "diag.bn_eval_gap=false"]])
def test_every_custom_scalars_chart_has_a_series_the_run_wrote(tmp_path, diag):
    """No empty "Matches (0)" chart for what a run did not measure (a diag=off sweep showed 17 of them)."""
    train(build_run(compose_config(TINY + diag)), tmp_path, {})
    written = events_of(tmp_path).Tags()["scalars"]
    charts = [chart for category in layout_of(tmp_path).category for chart in category.chart]
    for chart in charts:
        assert any(re.search(pattern, tag) for pattern in chart.multiline.tag for tag in written), chart.title
    titles = {chart.title for chart in charts}
    assert {"loss", "accuracy", "learning rate"} <= titles
    if "diag.every=0" in diag:  # the dead-unit probe still runs: its charts stay, the per-layer statistics' go
        assert titles == {"loss", "accuracy", "learning rate", "dead ReLU units on the probe batch",
                          "ReLU units dead for good (at every probe since they died)",
                          "val accuracy: BN in train vs eval mode"}


bn_gn_sweep = test_sweeps.bn_gn_sweep  # the one sweep the suite makes, shared


@pytest.mark.slow  # the sweep it reads takes ~7 s
def test_a_sweeps_charts_are_margin_charts_which_tensorboard_does_not_smooth(bn_gn_sweep):
    """Custom Scalars smooths a line chart (0.6 by default: a 2-point line's end drawn 0.375 of the way back), never
    a margin chart: the sensitivity is one, the mean over seeds with their range."""
    sensitivity = bn_gn_sweep[0] / "sensitivity"
    charts = [chart for category in layout_of(sensitivity).category for chart in category.chart]
    assert charts and all(chart.WhichOneof("content") == "margin" for chart in charts)
    val_acc = next(chart.margin.series[0] for chart in charts if "val_acc" in chart.title)
    assert (val_acc.value, val_acc.lower, val_acc.upper) == ("sensitivity/val_acc", "sensitivity/val_acc_min",
                                                             "sensitivity/val_acc_max")
    for series in ("norm=bn", "norm=gn"):
        values = scalars(sensitivity / series)
        assert values["sensitivity/val_acc"] == values["sensitivity/val_acc_min"] == values["sensitivity/val_acc_max"]


def test_saturation_is_logged_for_sigmoid_layers_only(tmp_path):
    cfg = compose_config(TINY + ["act=sigmoid", "diag.every=2"])
    train(build_run(cfg), tmp_path, {})
    series = tags(tmp_path)["scalars"]
    assert "saturation/features.0.act" in series and "saturation/features.0.conv" not in series
    assert not any(tag.startswith("dead/") for tag in series)  # a sigmoid cannot be "dead"


def get_json(url: str, timeout: float = 60) -> object:
    """TensorBoard loads event files in the background: retry until the answer is non-empty."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.load(response)
        if data or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def serve(logdir: Path) -> tuple[subprocess.Popen, str]:
    """A real TensorBoard on a free port of 127.0.0.1, and its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
         "--reload_interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in server.stdout:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if match:
            return server, match.group(1)
    server.kill()
    raise AssertionError("tensorboard did not start")


@pytest.mark.slow
def test_a_lecture_tour_run_fills_every_chart_of_its_layout_with_curves(tmp_path):
    """A README tour command of under 100 steps, read through TensorBoard's own HTTP API: every chart of the run's
    layout has data, and each per-layer line at least 10 points."""
    needs_fashion()
    cfg = compose_config(["model=mlp", "act=sigmoid", "init=normal", "init.std=1.0", "norm=none",
                          "data=fashion_mnist", f"data.root={FASHION.parent / 'none'}", "data.download=false",
                          "data.subset=10000", "epochs=1", "device=cpu"])
    run = build_run(cfg)
    assert run.total_steps < 100
    train(run, tmp_path, to_dict(cfg))
    server, base = serve(tmp_path)
    try:
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
        available = get_json(f"{base}/data/plugin/scalars/tags")["."]
        for category in layout["category"]:
            for chart in category["chart"]:
                patterns = [re.compile(p) for p in chart["multiline"]["tag"]]
                lines = [tag for tag in available if any(p.search(tag) for p in patterns)]
                assert lines, chart["title"]
                for tag in lines:
                    points = get_json(f"{base}/data/plugin/scalars/scalars?run=.&tag={urllib.request.quote(tag)}")
                    per_layer = re.match(r"^[^/]+/\d+ ", tag)
                    assert len(points) >= (10 if per_layer else 1), (chart["title"], tag, len(points))
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_real_tensorboard_serves_the_dashboards(run_dir):
    server, base = serve(run_dir)
    try:
        assert get_json(f"{base}/data/runs") == ["."]
        series = get_json(f"{base}/data/plugin/scalars/tags")["."]
        assert {"act_std/01 features.0.act", "grad_norm/02 features.2.conv", "dead/01 features.0.act"} <= set(series)
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
        assert layout["category"][0]["title"] == "training"
        charts = {chart["title"] for category in layout["category"] for chart in category["chart"]}
        assert "std of the output: activations" in charts
        histograms = get_json(f"{base}/data/plugin/histograms/tags")["."]
        assert {"act/01 features.0.act", "weight_grad/01 features.0.conv"} <= set(histograms)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_histograms_alone_without_statistics(tmp_path):
    cfg = compose_config(TINY + ["diag.every=0", "diag.hist_every=2", "diag.probe_every=0"])
    train(build_run(cfg), tmp_path, {})
    found = tags(tmp_path)
    assert "act/features.0.act" in found["histograms"]
    assert not any(t.startswith("act_std/") for t in found["scalars"])


def test_batch_instance_norm_logs_its_learned_mix(tmp_path):
    cfg = compose_config(TINY + ["norm=bin", "diag.every=2"])
    train(build_run(cfg), tmp_path, {})
    values = scalars(tmp_path)
    assert values["bin_rho/features.0.norm"] and all(0.0 <= v <= 1.0 for _, v in values["bin_rho/features.0.norm"])
    assert "bn_shift/features.0.norm" in values  # BIN keeps BN's running statistics too
