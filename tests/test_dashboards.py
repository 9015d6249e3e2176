"""What a run writes for TensorBoard, read back from the event file and through a real TensorBoard server."""

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.diagnostics.layer_stats import Schedule
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
    tags = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0}).Reload().Tags()
    scalars = set(tags["scalars"])
    for layer in LAYERS:
        assert {f"act_mean/{layer}", f"act_std/{layer}", f"act_zero/{layer}", f"grad_norm/{layer}",
                f"grad_std/{layer}"} <= scalars, layer
    for layer in ("features.0.conv", "features.2.conv", "head.fc"):
        assert {f"weight_norm/{layer}", f"weight_grad_norm/{layer}", f"update_ratio/{layer}",
                f"sign_agreement/{layer}"} <= scalars
    assert {"dead/features.0.act", "dead_permanent/features.2.act", "bn_shift/features.0.norm",
            "bn_var_ratio/features.2.norm", "bn/val_acc_train_mode", "bn/val_acc_eval_mode",
            "reference/update_ratio"} <= scalars
    events = EventAccumulator(str(run_dir)).Reload()
    for tag in ("landscape/loss_range", "landscape/grad_change_range", "landscape/beta"):
        assert [e.step for e in events.Scalars(tag)] == [6, 12], tag  # every diag.landscape_every steps
    histograms = set(tags["histograms"])
    assert {"act/features.0.act", "grad/features.0.conv", "weight/features.2.conv",
            "weight_grad/head.fc"} <= histograms
    assert "depth/act_std_and_grad_norm" in tags["images"]
    assert "custom_scalars__config__" in tags["tensors"]


def test_full_diagnostics_measure_every_step(run_dir):
    events = EventAccumulator(str(run_dir)).Reload()
    assert [e.step for e in events.Scalars("act_std/features.0.act")] == list(range(1, 13))
    # the probe at initialisation and often enough for 10 points: every 2 steps here, below probe_every=4
    assert [e.step for e in events.Scalars("dead/features.0.act")] == [1, 2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize(("every", "last", "measured"), [
    (100, 78, [1, *range(4, 77, 4), 78]),  # a short run: 20 points, not one
    (100, 5000, [1, *range(100, 5001, 100)]),  # a long one: every 100 steps
    (0, 78, []),  # diag=off measures nothing
])
def test_every_run_is_measured_at_init_often_enough_for_a_curve_and_at_the_end(every, last, measured):
    schedule = Schedule(every=every, last=last)
    assert [step for step in range(1, last + 1) if schedule.stats(step)] == measured


def test_saturation_is_logged_for_sigmoid_layers_only(tmp_path):
    cfg = compose_config(TINY + ["act=sigmoid", "diag.every=2"])
    train(build_run(cfg), tmp_path, {})
    scalars = EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"]
    assert "saturation/features.0.act" in scalars and "saturation/features.0.conv" not in scalars
    assert not any(tag.startswith("dead/") for tag in scalars)  # a sigmoid cannot be "dead"


def get_json(url: str, timeout: float = 60) -> object:
    """TensorBoard loads event files in the background: retry until the answer is non-empty."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.load(response)
        if data or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


@pytest.mark.slow
def test_a_real_tensorboard_serves_the_dashboards(run_dir):
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir), "--host", "127.0.0.1", "--port", "0",
         "--reload_interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = None
        for line in server.stdout:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if match:
                base = match.group(1)
                break
        assert base, "tensorboard did not start"
        assert get_json(f"{base}/data/runs") == ["."]
        scalars = get_json(f"{base}/data/plugin/scalars/tags")["."]
        assert {"act_std/features.0.act", "grad_norm/features.2.conv", "dead/features.0.act"} <= set(scalars)
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
        charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
                  for chart in category["chart"]}
        assert charts["std of each layer's output"] == [r"act_std/.*"]
        histograms = get_json(f"{base}/data/plugin/histograms/tags")["."]
        assert {"act/features.0.act", "weight_grad/features.0.conv"} <= set(histograms)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_histograms_alone_without_statistics(tmp_path):
    cfg = compose_config(TINY + ["diag.every=0", "diag.hist_every=2", "diag.probe_every=0"])
    train(build_run(cfg), tmp_path, {})
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()
    assert "act/features.0.act" in tags["histograms"]
    assert not any(t.startswith("act_std/") for t in tags["scalars"])


def test_batch_instance_norm_logs_its_learned_mix(tmp_path):
    cfg = compose_config(TINY + ["norm=bin", "diag.every=2"])
    train(build_run(cfg), tmp_path, {})
    events = EventAccumulator(str(tmp_path)).Reload()
    values = [e.value for e in events.Scalars("bin_rho/features.0.norm")]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert "bn_shift/features.0.norm" in events.Tags()["scalars"]  # BIN keeps BN's running statistics too
