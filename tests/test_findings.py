"""Each findings rule: a constructed case that fires it and one that does not."""

import json

import pytest
from conftest import TINY, compose_config, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose.cli.commands import main
from diagnose.config import Thresholds
from diagnose.findings import RUN_RULES, bn_small_batch, run_findings
from diagnose.results import RunMetrics
from diagnose.sweep.runs import RunRecord

T = Thresholds()


def layers(**per_layer: dict) -> dict:
    return {"layers": {name.replace("_", "."): values for name, values in per_layer.items()}, "steps": 100}


def metrics(case: dict) -> RunMetrics:
    """A case, written as the part of a metrics.json it needs, as the rules read it."""
    return RunMetrics.from_json({"status": "completed", **case})


CASES = {  # rule -> (metrics that fire it, metrics that do not)
    "dead_relu": ({**layers(features_0_act={"dead": 0.61}), "dead_history": {"features.0.act": [[100, 0.1],
                                                                                                [200, 0.61]]}},
                  layers(features_0_act={"dead": 0.05})),
    "saturation": (layers(features_0_act={"saturation": 0.9}), layers(features_0_act={"saturation": 0.1})),
    "vanishing_activations": (layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 1e-4}),
                              layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 0.5})),
    "exploding_activations": (layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 1e4}),
                              layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 2.0})),
    "vanishing_gradients": (layers(features_0_act={"grad_norm": 1e-6}, features_9_act={"grad_norm": 1.0}),
                            layers(features_0_act={"grad_norm": 0.5}, features_9_act={"grad_norm": 1.0})),
    "exploding_gradients": (layers(features_0_act={"grad_norm": 1e6}, features_9_act={"grad_norm": 1.0}),
                            layers(features_0_act={"grad_norm": 2.0}, features_9_act={"grad_norm": 1.0})),
    "update_ratio_high": (layers(features_0_conv={"update_ratio": 0.5}),
                          layers(features_0_conv={"update_ratio": 1e-3})),
    "update_ratio_low": (layers(features_0_conv={"update_ratio": 1e-7}),
                         layers(features_0_conv={"update_ratio": 1e-3})),
    "divergence": ({"nonfinite": {"step": 7, "layer": "features.2.conv", "tensor": "activation"}},
                   {"nonfinite": None}),
    "non_centred_inputs": ({**layers(features_0_linear={"sign_agreement": 0.9}), "config": {"data": {"center": False}}},
                           layers(features_0_linear={"sign_agreement": 0.1})),
    "zero_init_symmetry": ({"symmetric_layers": ["features.0.linear"]}, {"symmetric_layers": []}),
    "did_not_learn": ({"command": "train", "classes": 10, "final": {"val_acc": 0.11}, "steps": 100},
                      {"command": "train", "classes": 10, "final": {"val_acc": 0.8}, "steps": 100}),
    "bn_train_eval_gap": ({"history": [{"step": 10, "epoch": 1, "val_loss": 1, "val_acc": 0.6,
                                        "val_acc_bn_train_mode": 0.8}]},
                          {"history": [{"step": 10, "epoch": 1, "val_loss": 1, "val_acc": 0.8,
                                        "val_acc_bn_train_mode": 0.81}]}),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_its_case_and_not_on_a_healthy_one(rule):
    fires, healthy = CASES[rule]
    found = {f.rule: f for f in run_findings(metrics(fires), T)}
    assert rule in found
    assert found[rule].message and found[rule].remedy
    assert rule not in {f.rule for f in run_findings(metrics(healthy), T)}


def test_every_rule_is_covered():
    names = set()
    for rule in RUN_RULES:
        for fires, _ in CASES.values():
            names |= {f.rule for f in rule(metrics(fires), T)}
    assert names == set(CASES)


def test_dead_relu_says_since_when_and_divergence_names_the_layer():
    (dead,) = [f for f in run_findings(metrics(CASES["dead_relu"][0]), T) if f.rule == "dead_relu"]
    assert dead.message == ("61% dead ReLU units in 1 of 1 ReLU layers (features.0.act), from step 200: no gradient "
                            "reaches them") and dead.step == 200
    (div,) = run_findings(metrics(CASES["divergence"][0]), T)
    assert "step 7" in div.message and "features.2.conv" in div.message and div.severity == "error"


def test_thresholds_come_from_config():
    assert compose_config(["findings.saturation=0.95"]).findings == Thresholds(name="default", saturation=0.95)
    assert [f.rule for f in run_findings(metrics(CASES["saturation"][0]), Thresholds(saturation=0.95))] == [
        "no_findings"]


def test_a_run_prints_stores_logs_and_reports_its_findings(tmp_path, capsys, monkeypatch):
    result = run_cli(["train", *TINY, "init=zeros", "norm=none"], tmp_path)
    assert result.returncode == 0, result.stderr
    symmetry = "all units have identical weights"
    assert symmetry in " ".join((result.stdout + result.stderr).split())  # rich prints to stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    stored = json.loads((run_dir / "metrics.json").read_text())["findings"]
    assert "zero_init_symmetry" in {f["rule"] for f in stored}
    events = EventAccumulator(str(run_dir)).Reload()
    (text,) = events.Tensors("findings/text_summary")
    assert symmetry in text.tensor_proto.string_val[0].decode()
    monkeypatch.setenv("COLUMNS", "200")
    main(["report", str(run_dir)])
    assert symmetry in " ".join(capsys.readouterr().out.split())


def bn_run(batch: int, acc: float, norm: str = "bn") -> RunRecord:
    return RunRecord(path=None, overrides={"norm": norm, "batch": batch},
                     metrics=metrics({"final": {"val_acc": acc}, "config": {"norm": {"name": norm}, "batch": batch}}))


def test_bn_small_batch_collapse_in_a_sweep():
    (finding,) = bn_small_batch([bn_run(2, 0.60), bn_run(8, 0.80), bn_run(32, 0.83)], T)
    assert finding.message.startswith("BN at batch 2: val accuracy 23 points below batch 32")
    assert "gn" in finding.remedy
    assert not bn_small_batch([bn_run(2, 0.80), bn_run(32, 0.83)], T)
    assert not bn_small_batch([bn_run(2, 0.40, "gn"), bn_run(32, 0.83, "gn")], T)


def test_a_signal_that_vanishes_to_exactly_zero_is_still_a_finding():
    case = layers(features_0_act={"act_std": 1.0, "grad_norm": 0.0}, features_9_act={"act_std": 0.0,
                                                                                      "grad_norm": 1.0})
    assert {"vanishing_activations", "vanishing_gradients"} <= {f.rule for f in run_findings(metrics(case), T)}


def config(**groups: str) -> dict:
    """A metrics.json config naming the chosen options (`data_center=True` sets data.center)."""
    out: dict = {}
    for key, value in groups.items():
        if key == "data_center":
            out["data"] = {"center": value}
        else:
            out[key] = {"name": value}
    return out


def remedies(case: dict, rule: str) -> str:
    (finding,) = [f for f in run_findings(metrics(case), T) if f.rule == rule]
    return finding.remedy


def test_no_remedy_names_the_setting_already_in_use():
    dead = CASES["dead_relu"][0]
    assert "kaiming_normal" in remedies(dead, "dead_relu")
    assert "kaiming_normal" not in remedies({**dead, "config": config(act="relu", init="kaiming_normal")}, "dead_relu")
    flat = CASES["saturation"][0]
    assert "xavier_normal" in remedies({**flat, "config": config(act="sigmoid")}, "saturation")
    in_use = remedies({**flat, "config": config(act="sigmoid", init="xavier_normal", norm="bn")}, "saturation")
    assert "xavier_normal" not in in_use and "normalisation" not in in_use and "relu" in in_use
    divergence = {**CASES["divergence"][0], "config": config(clip="norm", norm="gn")}
    assert remedies(divergence, "divergence") == "lower the learning rate"
    # centred inputs are never told to centre the inputs, however much the signs agree (a high lr does that)
    zigzag = CASES["non_centred_inputs"][0]
    assert not [f for f in run_findings(metrics({**zigzag, "config": config(data_center=True)}), T)
                if f.rule == "non_centred_inputs"]


def test_a_rule_speaks_once_for_all_its_layers_with_the_range():
    case = layers(**{f"features_{i}_act": {"saturation": 0.89 + i / 300} for i in range(20)})
    (finding,) = [f for f in run_findings(metrics({**case, "config": config(act="sigmoid")}), T)]
    assert finding.message.startswith("89-95% of outputs saturated in 20 of 20 sigmoid layers (features.0.act, "
                                      "features.1.act, ..., features.19.act)")


def test_findings_come_errors_first_and_a_healthy_run_says_what_passed():
    case = {**CASES["saturation"][0], **CASES["did_not_learn"][0]}
    assert [f.severity for f in run_findings(metrics(case), T)] == ["error", "warning"]
    (healthy,) = run_findings(metrics(CASES["saturation"][1]), T)
    assert healthy.rule == "no_findings" and healthy.severity == "info"
    assert "dead relus" in healthy.message and "saturation" in healthy.message


def test_a_nan_before_any_update_points_at_the_init_not_the_learning_rate():
    at_step_1 = {"nonfinite": {"step": 1, "layer": "features.5.linear", "tensor": "activation"}}
    for case in (at_step_1, {**at_step_1, "command": "probe"}):
        (finding,) = run_findings(metrics(case), T)
        assert "learning rate" not in finding.remedy and "init" in finding.remedy
    (probe,) = run_findings(metrics({**at_step_1, "command": "probe"}), T)
    assert probe.message.startswith("the signal overflows to NaN/Inf at initialisation")


def test_a_signal_that_overflows_to_inf_is_exploding():
    case = layers(features_0_act={"act_std": 1.0}, features_5_act={"act_std": float("inf")})
    assert "exploding_activations" in {f.rule for f in run_findings(metrics(case), T)}


def test_small_batch_bn_is_set_against_the_sweeps_groupnorm_runs():
    runs = [bn_run(2, 0.60), bn_run(32, 0.83), bn_run(2, 0.80, "gn"), bn_run(32, 0.81, "gn")]
    (finding,) = bn_small_batch(runs, T)
    assert "BN at batch 2: val accuracy 23 points below batch 32, while GN drops 1 over the same batches" in \
        finding.message
