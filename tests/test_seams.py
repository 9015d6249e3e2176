"""The seams new work plugs into: a registry entry is measured as it says, an instrument sees the moments of a run,
a metric declared once reaches every view, results and configs survive their files."""

import json

import pytest
import torch
from conftest import TINY, compose_config

from diagnose.build import build_run
from diagnose.components.activations import ACTIVATIONS, IDENTITY, RELU_LIKE, SATURATING
from diagnose.components.norms import BATCH, NORMS
from diagnose.config import TrainConfig, from_dict, to_dict
from diagnose.diagnostics import metrics as metric_table
from diagnose.diagnostics.dashboard import custom_scalars_layout
from diagnose.diagnostics.layers import measured_layers
from diagnose.diagnostics.metrics import LayerMetric
from diagnose.diagnostics.monitor import Instrument, Monitor
from diagnose.report import layer_table
from diagnose.results import RunMetrics
from diagnose.sweep.runs import RunRecord
from diagnose.training import loop
from diagnose.training.loop import train

MEASURE_ALL = ["diag.every=1", "diag.probe_every=1", "steps=2"]


def run_with(tmp_path, *overrides: str) -> RunMetrics:
    cfg = compose_config([*TINY, *MEASURE_ALL, *overrides])
    return train(build_run(cfg), tmp_path, to_dict(cfg))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_registered_activation_is_measured_as_its_entry_says(act, tmp_path):
    entry = ACTIVATIONS[act]
    metrics = run_with(tmp_path, f"act={act}", "norm=none")
    acts = {name: record.values for name, record in metrics.layers.items() if record.role == "act"}
    assert len(acts) == 2  # model.widths=[8,16]: one block per stage
    for name, values in acts.items():
        assert {"act_std", "act_mean", "grad_norm"} <= set(values), name
        assert ("dead" in values) == (entry.kind == RELU_LIKE), name  # a unit that still passes gradient is not dead
        assert ("saturation" in values) == (entry.kind == SATURATING), name
        assert metrics.layers[name].kind == entry.kind
    if entry.kind == IDENTITY:  # the identity leaves the signal as it is
        for i in range(2):
            conv, act_out = metrics.value("act_std", f"features.{2 * i}.conv"), acts[f"features.{2 * i}.act"]
            assert act_out["act_std"] == pytest.approx(conv, rel=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_every_registered_norm_is_measured_as_its_entry_says(norm, tmp_path):
    entry = NORMS[norm]
    metrics = run_with(tmp_path, f"norm={norm}")
    norms = {name: record for name, record in metrics.layers.items() if record.role == "norm"}
    assert len(norms) == (0 if entry.make is None else 2)
    for name, record in norms.items():
        assert record.kind == entry.kind and "act_std" in record.values, name
        assert ("bn_shift" in record.values) == (entry.kind == BATCH), name
    assert (metrics.bn_train_eval_gap is not None) == (entry.kind == BATCH)  # BN's train/eval comparison


class Moments(Instrument):
    """Records each moment it is called at."""

    name = "moments"

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def before_step(self, step, x, readings):
        assert x.shape[0] == 64 and x.dtype == torch.float32  # the step's inputs, as the model gets them
        self.calls.append(("before_step", step))

    def after_backward(self, step, readings):
        self.calls.append(("after_backward", step))

    def after_step(self, step, readings):
        readings.scalars["moments/step"] = float(step)  # what it measures is written and kept like any other
        self.calls.append(("after_step", step))

    def on_evaluation(self, evaluation, readings):
        self.calls.append(("on_evaluation", evaluation.step))

    def finish(self, metrics):
        self.calls.append(("finish", metrics.steps))

    def state(self):
        return {"calls": len(self.calls)}


def test_an_instrument_plugs_into_the_monitor_without_touching_the_loop(monkeypatch, tmp_path):
    moments = Moments()

    def with_moments(*args):
        monitor = build(*args)
        monitor.instruments.append(moments)
        return monitor

    build = loop.monitor_for
    monkeypatch.setattr(loop, "monitor_for", with_moments)
    cfg = compose_config([*TINY, "steps=null", "epochs=2", "batch=64"])  # 3 steps an epoch
    metrics = train(build_run(cfg), tmp_path, to_dict(cfg))
    per_step = [(moment, step) for step in range(1, 7) for moment in ("before_step", "after_backward", "after_step")]
    expected = per_step[:9] + [("on_evaluation", 3)] + per_step[9:] + [("on_evaluation", 6), ("finish", 6)]
    assert moments.calls == expected
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # its state is saved, the last time with the trained state, before the results are made
    assert checkpoint["record"]["diagnostics"]["moments"] == {"calls": len(expected) - 1}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path)).Reload()
    assert [e.value for e in events.Scalars("moments/step")] == [1, 2, 3, 4, 5, 6]
    assert metrics.status == "completed"


def test_a_metric_declared_once_reaches_the_run_the_dashboard_and_the_report(monkeypatch, tmp_path):
    absmax = LayerMetric("act_absmax", "largest |output|", "activations", column="max |out|", of="output",
                         compute=lambda seen: seen.x.abs().amax())
    monkeypatch.setattr(metric_table, "LAYER_METRICS", [*metric_table.LAYER_METRICS, absmax])
    metrics = run_with(tmp_path, "act=relu")
    absmax_by_layer = {name: record.values["act_absmax"] for name, record in metrics.layers.items()}
    assert len(absmax_by_layer) == len(metrics.layers) and all(v > 0 for v in absmax_by_layer.values())
    run = build_run(compose_config([*TINY, "act=relu"]))
    layout = custom_scalars_layout(measured_layers(run.model, run.act, run.norm))["activations"]
    assert {"largest |output|: conv/linear layers", "largest |output|: norm layers",
            "largest |output|: activations"} <= set(layout)
    table = layer_table(RunRecord(tmp_path, {}, metrics))
    assert "max |out|" in [column.header for column in table.columns]


def test_run_metrics_survive_their_file_and_old_files_still_read(tmp_path):
    metrics = run_with(tmp_path, "norm=bn")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert RunMetrics.from_json(saved) == metrics
    assert saved["layers"]["features.2.norm"]["role"] == "norm" and "act_std" in saved["layers"]["features.2.norm"]
    # a metrics.json from before roles and kinds were stored, and before `command`
    old = {k: v for k, v in saved.items() if k != "command"}
    old["layers"] = {name: {k: v for k, v in values.items() if k not in ("role", "kind")}
                     for name, values in saved["layers"].items()}
    read = RunMetrics.from_json(old)
    assert read.layers["features.0.act"].role == "act" and read.layers["features.0.conv"].role == "weight"
    assert read.value("act_std", "features.0.act") == metrics.value("act_std", "features.0.act")


def test_a_saved_config_reads_back_as_the_same_typed_config():
    config = compose_config(["norm=gn", "act=leaky_relu", "act.slope=0.2", "optim=adam", "schedule=step"])
    again = from_dict(json.loads(json.dumps(to_dict(config))))
    assert isinstance(again, TrainConfig) and again == config
    assert type(again.norm) is type(config.norm) and again.act.slope == 0.2


class Silent:
    """A writer that keeps nothing."""

    file_writer = property(lambda self: self)

    def add_summary(self, summary, step):
        pass


def test_run_means_leave_out_the_steps_where_the_schedule_has_taken_the_lr_to_zero():
    class Ratio(Instrument):
        def after_step(self, step, readings):
            readings.scalars["update_ratio/features.0.conv"] = float(step)

    lr = {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.01, 5: 0.01}  # the lr each step trains with; below 10% from step 4
    now = {"step": 0}
    monitor = Monitor([], [Ratio()], Silent(), learning=lambda: lr[now["step"]] >= 0.1)
    for now["step"] in range(1, 5):
        monitor.before_step(now["step"], None)
        monitor.after_step(now["step"])
    now["step"] = 5  # the run ends with the schedule moved on, as after every step
    metrics = RunMetrics(status="completed")
    monitor.finish(metrics)
    # a step's value counts where the lr it leaves the run at is still learning: steps 1 and 2 (the next step's lr
    # is read once the schedule has moved on, whether a loop steps it before or after the optimizer's hooks run)
    assert metrics.run_means == {"update_ratio/features.0.conv": 1.5}
    assert monitor.latest["update_ratio/features.0.conv"] == 4.0  # the chart still gets every measurement
