"""`diagnose probe`: the lecture's initialisation experiments, on small versions, against theory."""

import math

import pytest
from conftest import compose_config, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose.probe import probe
from diagnose.results import RunMetrics


def probe_layers(tmp_path, *overrides: str) -> tuple[list[dict[str, float]], RunMetrics]:
    width = [] if "model=cnn" in overrides else ["model.width=256"]
    # the Jacobian's spectrum has tests of its own: the others leave it out (seconds each at 30 layers)
    jacobian = [] if any(o.startswith("probe.jacobian=") for o in overrides) else ["probe.jacobian=off"]
    cfg = compose_config(["device=cpu", *width, "probe.batch=256", *jacobian, *overrides], config_name="probe")
    metrics = probe(cfg, tmp_path)
    acts = [record.values for record in metrics.layers.values() if record.role == "act"]
    return acts, metrics


def rules(metrics: RunMetrics) -> set[str]:
    return {f.rule for f in metrics.findings}


def test_unit_gaussian_weights_explode(tmp_path):
    acts, metrics = probe_layers(tmp_path, "init=normal", "init.std=1.0", "model.depth=8")
    stds = [a["act_std"] for a in acts]
    # each layer multiplies the std by about std * sqrt(width / 2) = 11
    assert all(later > 5 * earlier for earlier, later in zip(stds, stds[1:], strict=False))
    (finding,) = [f for f in metrics.findings if f.rule == "exploding_signal"]
    assert finding.message.startswith("exploding signal: activation std grows")
    events = EventAccumulator(str(tmp_path)).Reload()
    assert "findings/text_summary" in events.Tags()["tensors"]


def test_small_gaussian_weights_vanish(tmp_path):
    acts, metrics = probe_layers(tmp_path, "init=normal", "init.std=0.01", "act=tanh", "model.depth=8")
    stds = [a["act_std"] for a in acts]
    assert stds[-1] < 1e-3 * stds[0]
    # one cause, one finding: the signal falls forward and its gradient backward
    (finding,) = [f for f in metrics.findings if f.rule == "vanishing_signal"]
    assert "activation std falls" in finding.message and "the gradient w.r.t. the layers' outputs falls" in \
        finding.message


def local_sigmoid_gradient(metrics: RunMetrics, depth: int) -> list[float]:
    """Per layer: std of the gradient before the sigmoid over after it, i.e. the typical sigmoid'(h)."""
    value = metrics.value
    return [value("grad_std", f"features.{i}.linear") / value("grad_std", f"features.{i}.act")
            for i in range(depth)]


def test_sigmoid_with_large_weights_saturates_and_its_gradient_vanishes(tmp_path):
    acts, metrics = probe_layers(tmp_path, "init=normal", "init.std=1.0", "act=sigmoid", "model.depth=8")
    assert min(a["saturation"] for a in acts) > 0.5
    # the gradient passing through a saturated sigmoid shrinks to a few percent ...
    assert max(local_sigmoid_gradient(metrics, 8)) < 0.1
    assert any("of outputs saturated" in f.message for f in metrics.findings)  # its own, or a depth finding's
    # ... where an unsaturated one passes close to its maximum slope, 1/4
    _, healthy = probe_layers(tmp_path, "init=xavier_normal", "act=sigmoid", "model.depth=8")
    assert min(local_sigmoid_gradient(healthy, 8)) > 0.19
    assert not any("saturated" in f.message for f in healthy.findings)


def test_kaiming_normal_keeps_relu_std_within_a_factor_of_two_over_30_layers(tmp_path):
    acts, metrics = probe_layers(tmp_path, "init=kaiming_normal", "act=relu", "model.depth=30", "model.width=512")
    stds = [a["act_std"] for a in acts]
    assert len(stds) == 30 and max(stds) / min(stds) < 2
    assert not rules(metrics) & {"vanishing_signal", "exploding_signal"}


def test_lecun_normal_halves_relu_variance_per_layer(tmp_path):
    depth = 20
    acts, _ = probe_layers(tmp_path, "init=lecun_normal", "act=relu", f"model.depth={depth}", "model.width=512")
    measured = acts[-1]["act_std"] / acts[0]["act_std"]
    predicted = 2 ** (-(depth - 1) / 2)  # Var(w) = 1/N: each ReLU layer halves the variance
    assert math.log2(measured) == pytest.approx(math.log2(predicted), abs=1.0), (measured, predicted)


def test_zero_init_gives_every_unit_of_a_layer_the_same_gradient(tmp_path):
    _, metrics = probe_layers(tmp_path, "init=zeros", "model.depth=3")
    assert {"features.0.linear", "features.1.linear", "features.2.linear"} <= set(metrics.symmetric_layers)
    assert "zero_init_symmetry" in rules(metrics)
    _, random = probe_layers(tmp_path, "init=kaiming_normal", "model.depth=3")
    assert random.symmetric_layers == []


def test_probe_on_real_data_and_a_cnn(tmp_path):  # the default data: the Fashion-MNIST sample shipped
    acts, metrics = probe_layers(tmp_path, "probe.input=data", "model=cnn", "model.widths=[8,16]", "norm=bn")
    assert len(acts) == 2 and metrics.status == "completed"


def test_probe_sweep_draws_one_line_per_setting_against_depth(tmp_path):
    result = run_cli(["probe", "-m", "init=normal,kaiming_normal", "act=relu,tanh", "model.depth=4",
                      "model.width=64", "probe.batch=64", "device=cpu"], tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted((tmp_path / "outputs" / "multirun" / "probe").glob("*/*/*/metrics.json"))
    assert len(jobs) == 4
    for job in jobs:
        events = EventAccumulator(str(job.parent)).Reload()
        assert [e.step for e in events.Scalars("probe/act_std")] == [1, 2, 3, 4]
    assert "act std" in result.stderr  # the per-layer table


def test_the_probe_shows_the_jacobian_spectrum_with_the_mean_field_prediction(tmp_path):
    _, metrics = probe_layers(tmp_path / "relu", "model.depth=6", "model.width=64", "probe.input=gaussian",
                              "probe.shape=[1,8,8]", "probe.jacobian=auto")
    spectrum = metrics.jacobian
    assert spectrum.method == "exact" and [d[0] for d in spectrum.depths] == [1, 2, 3, 4, 5, 6]
    assert spectrum.chi_predicted == pytest.approx(1.0, abs=0.05)  # Kaiming + ReLU: critical
    assert spectrum.chi_measured == pytest.approx(spectrum.chi_predicted, rel=0.15)
    events = EventAccumulator(str(tmp_path / "relu")).Reload()
    assert {"jacobian/mean_sq", "jacobian/std_sq", "jacobian/max_over_min_log10"} <= set(events.Tags()["scalars"])
    assert "jacobian/singular_values" in events.Tags()["histograms"]
    saved = RunMetrics.from_json(__import__("json").loads((tmp_path / "relu" / "metrics.json").read_text()))
    assert saved.jacobian.depths[-1][:3] == pytest.approx(spectrum.depths[-1][:3])

    _, ordered = probe_layers(tmp_path / "tanh", "model.depth=30", "model.width=64", "probe.shape=[1,8,8]",
                              "act=tanh", "init=normal", "init.std=0.1", "probe.jacobian=auto")  # σ_w² 0.64: χ₁ ~0.6
    (finding,) = [f for f in ordered.findings if f.rule == "vanishing_signal"]  # χ₁ is part of its evidence
    assert finding.severity == "warning" and "a net does not train, and it has 30" in finding.message

    _, moments = probe_layers(tmp_path / "moments", "model.depth=3", "model.width=64", "probe.shape=[1,8,8]",
                              "probe.jacobian=moments")
    assert moments.jacobian.method == "moments" and moments.jacobian.depths[0][3] is None


def test_the_probe_predicts_a_saturated_sigmoid_nets_growth_and_says_how_far_its_jacobian_is(tmp_path, capsys):
    # the issue's `diagnose probe act=sigmoid init=normal init.std=1.0`, 4 of its 1000-wide layers: σ_w² ~ 1000,
    # q ~ 500, and χ₁ ~ 3 per layer (the 80-node Gauss-Hermite rule predicted 0.11: "ordered phase")
    cfg = compose_config(["device=cpu", "act=sigmoid", "init=normal", "init.std=1.0", "model.width=1000",
                          "model.depth=4", "probe.shape=[1,32,32]", "probe.batch=64", "probe.jacobian_examples=1"],
                         config_name="probe")
    spectrum = probe(cfg, tmp_path).jacobian
    assert spectrum.chi_predicted == pytest.approx(3.0, rel=0.05)
    assert spectrum.chi_measured == pytest.approx(spectrum.chi_predicted, rel=0.1)
    assert [d[5] for d in spectrum.depths[1:]] == pytest.approx([spectrum.chi_predicted] * 3, rel=0.25)
    said = capsys.readouterr()
    lines = " ".join((said.out + said.err).split())
    # not a terminal: a plain line at each stage of the Jacobian's computation, before its table
    assert lines.index("Jacobian: example 1/1: singular values per depth") < lines.index("input-output Jacobian")
    assert lines.index("one batch at initialisation, per layer") < lines.index("Jacobian: example 1/1")


def test_with_batchnorm_the_probe_says_why_there_is_no_jacobian(tmp_path, capsys):
    _, metrics = probe_layers(tmp_path, "model.depth=3", "model.width=32", "probe.shape=[1,8,8]", "norm=bn",
                              "probe.jacobian=auto")
    assert metrics.jacobian is None
    said = capsys.readouterr()
    assert "the Jacobian of one example is not defined" in " ".join((said.out + said.err).split())


def test_a_signal_that_overflows_float32_gets_its_spectrum_to_where_it_overflows_and_one_finding(tmp_path):
    # 64 wide, std 10: each layer multiplies the signal by ~10 sqrt(32) = 57, past float32's 3e38 by depth ~22
    _, metrics = probe_layers(tmp_path, "init=normal", "init.std=10.0", "model.depth=30", "model.width=64",
                              "probe.shape=[1,8,8]", "probe.jacobian=exact", "probe.jacobian_examples=1")
    depths = [d[0] for d in metrics.jacobian.depths]
    assert depths == list(range(1, len(depths) + 1)) and 10 < len(depths) < 30
    assert all(math.isfinite(d[1]) for d in metrics.jacobian.depths)
    assert metrics.jacobian.chi_measured == pytest.approx(metrics.jacobian.chi_predicted, rel=0.2)
    # the overflow and how the signal got there are one finding: the error
    assert [f.rule for f in metrics.findings] == ["divergence", "checks"]
    assert "the chaotic phase" in metrics.findings[0].message
