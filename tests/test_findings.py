"""Each findings rule: a constructed case that fires it and one where it must stay quiet; what the closing line may
claim; one cause, one finding; remedies the tool accepts for the run."""

import json
import math

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


def config(**groups: object) -> dict:
    """A metrics.json config naming the chosen options (`data_center=True` sets data.center, `diag_every=0`
    diag.every)."""
    out: dict = {}
    for key, value in groups.items():
        if "_" in key and key.split("_")[0] in ("data", "diag", "probe"):
            group, setting = key.split("_", 1)
            out.setdefault(group, {})[setting] = value
        else:
            out[key] = {"name": value}
    return out


def findings(case: dict) -> list:
    """The run's findings without the closing line."""
    return [f for f in run_findings(metrics(case), T) if f.rule not in ("checks", "no_findings")]


def closing(case: dict) -> str:
    (last,) = [f for f in run_findings(metrics(case), T) if f.rule in ("checks", "no_findings")]
    return last.message


CASES = {  # rule -> (metrics that fire it, metrics where it must stay quiet)
    "dead_relu": ({**layers(features_0_act={"dead": 0.61}), "dead_history": {"features.0.act": [[100, 0.1],
                                                                                                [200, 0.61]]}},
                  layers(features_0_act={"dead": 0.05})),
    "saturation": ({**layers(features_0_act={"saturation": 0.9}), "config": config(act="sigmoid")},
                   {**layers(features_0_act={"saturation": 0.1}), "config": config(act="sigmoid")}),
    "vanishing_signal": (layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 1e-4}),
                         layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 0.5})),
    "exploding_signal": (layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 1e4}),
                         layers(features_0_act={"act_std": 1.0}, features_9_act={"act_std": 2.0})),
    "update_ratio_high": (layers(features_0_conv={"update_ratio": 0.5}),
                          layers(features_0_conv={"update_ratio": 1e-3})),
    "update_ratio_low": (layers(features_0_conv={"update_ratio": 1e-7}),
                         layers(features_0_conv={"update_ratio": 1e-3})),
    "divergence": ({"nonfinite": {"step": 7, "layer": "features.2.conv", "tensor": "activation"}},
                   {"nonfinite": None}),
    "non_centred_inputs": ({**layers(features_0_linear={"sign_agreement": 0.9}), "config": config(data_center=False)},
                           {**layers(features_0_linear={"sign_agreement": 0.1}),
                            "config": config(data_center=False)}),
    "zero_init_symmetry": ({"symmetric_layers": ["features.0.linear"]}, {"symmetric_layers": []}),
    "did_not_learn": ({"command": "train", "classes": 10, "final": {"val_acc": 0.11}, "steps": 100},
                      {"command": "train", "classes": 10, "final": {"val_acc": 0.8}, "steps": 100}),
    "bn_train_eval_gap": ({"history": [{"step": 10, "epoch": 1, "val_loss": 1, "val_acc": 0.6,
                                        "val_acc_bn_train_mode": 0.8}], "config": config(norm="bn"), "steps": 10},
                          {"history": [{"step": 10, "epoch": 1, "val_loss": 1, "val_acc": 0.8,
                                        "val_acc_bn_train_mode": 0.81}], "config": config(norm="bn"), "steps": 10}),
    "sharpness": ({"curvature": {"history": [[10, 5, 50, 40], [20, 45, 60, 40], [30, 42, 60, 40]]}, "steps": 30},
                  {"curvature": {"history": [[10, 5, 50, 40], [20, 20, 60, 40], [30, 30, 60, 40]]}, "steps": 30}),
    "batch_vs_noise_scale": ({"noise": {"b_simple": 5000, "b_simple_low": 3000, "grad_sq": 1, "trace_cov": 5000,
                                        "batch": 32, "micro_batch": 64, "history": [[100, 5000, 3000]]}},
                             {"noise": {"b_simple": 100, "b_simple_low": 60, "grad_sq": 1, "trace_cov": 100,
                                        "batch": 32, "micro_batch": 64, "history": [[100, 100, 60]]}}),
    "jacobian_depth": ({"command": "probe", "jacobian": {"method": "exact", "sigma_w2": 2.0,
                                                         "depths": [[1, 1.0, 0.5, 3, 0.0, None],
                                                                    [30, 1.0, 7.5, 90, 0.0, 1.0]],
                                                         "chi_measured": 1.0, "chi_predicted": 1.0}},
                       {"command": "probe", "jacobian": {"method": "exact", "sigma_w2": 2.0,
                                                         "depths": [[1, 1.0, 0.5, 3, 0.0, None],
                                                                    [5, 0.5, 0.2, 90, 0.0, 0.8]],
                                                         "chi_measured": 0.8, "chi_predicted": 0.8}}),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_its_case_and_not_on_a_healthy_one(rule):
    fires, healthy = CASES[rule]
    found = {f.rule: f for f in findings(fires)}
    assert rule in found
    assert found[rule].message
    assert rule not in {f.rule for f in findings(healthy)}


def test_every_rule_is_covered():
    names = set()
    for rule in RUN_RULES:
        for fires, _ in CASES.values():
            names |= {f.rule for f in rule(metrics(fires), T)}
    assert names == set(CASES)


def test_dead_relu_says_since_when_and_divergence_names_the_layer():
    (dead,) = [f for f in findings(CASES["dead_relu"][0]) if f.rule == "dead_relu"]
    assert dead.message == ("61% dead ReLU units in 1 of 1 ReLU layers (features.0.act) from step 200 to the last "
                            "probe: no gradient reaches them") and dead.step == 200
    (div,) = findings(CASES["divergence"][0])
    assert "step 7" in div.message and "features.2.conv" in div.message and div.severity == "error"


def test_dead_units_are_dated_from_when_they_died_for_good_and_a_layer_that_recovered_is_not_that_date():
    # features.0 was half dead at initialisation and came back; features.1 died at step 8 and stayed dead
    case = {**layers(features_0_act={"dead": 0.05}, features_1_act={"dead": 0.69}),
            "dead_history": {"features.0.act": [[1, 0.5], [4, 0.2], [8, 0.05], [20, 0.05]],
                             "features.1.act": [[1, 0.1], [4, 0.2], [8, 0.7], [20, 0.69]]}}
    (dead,) = findings(case)
    assert dead.message.startswith("69% dead ReLU units in 1 of 2 ReLU layers (features.1.act) from step 8 ")
    assert dead.step == 8 and "lower the learning rate" in dead.remedy
    # dead from the first probe on: the learning rate did not kill them
    born = {**case, "dead_history": {**case["dead_history"], "features.1.act": [[1, 0.7], [20, 0.69]]}}
    (dead,) = findings(born)
    assert "from initialisation" in dead.message and "learning rate" not in dead.remedy
    # only the first layer, dead for a while: a note, not a warning, that says it came back
    (recovered,) = findings({**case, "layers": {"features.0.act": {"dead": 0.05}, "features.1.act": {"dead": 0.2}},
                             "dead_history": {"features.0.act": case["dead_history"]["features.0.act"],
                                              "features.1.act": [[1, 0.1], [20, 0.2]]}})
    assert recovered.severity == "info" and "up to 50% dead" in recovered.message and "down to 5%" in \
        recovered.message


def history(metric: str, **per_layer: list) -> dict:
    return {metric: {name.replace("_", "."): points for name, points in per_layer.items()}}


def test_an_early_failure_that_training_later_hides_is_a_finding_with_its_step():
    """A deep lecun_normal ReLU net: its signal falls 3e4x at initialisation, training brings it back to 2x; the
    loss sat at ln 10 for 400 steps. The last measurement alone is healthy."""
    case = {**layers(features_0_act={"act_std": 1.0}, features_29_act={"act_std": 0.5}), "steps": 500,
            "layer_history": history("act_std", features_0_act=[[1, 1.0], [250, 1.0], [500, 1.0]],
                                     features_29_act=[[1, 3e-5], [250, 0.01], [500, 0.5]]),
            "train_curve": [[50, 2.303], [100, 2.302], [200, 2.301], [400, 2.29], [450, 1.9], [500, 1.2]]}
    assert not findings({**case, "layer_history": {}})  # what the last measurement shows: nothing
    (finding,) = findings(case)
    ratio = 3e-5 / 1.0  # computed here from the case, not by the rule
    assert finding.rule == "vanishing_signal" and finding.step == 1 and finding.value == pytest.approx(ratio)
    assert f"activation std falls {1 / ratio:.0e}x over 2 layers (features.0.act to features.29.act) at " \
           f"initialisation (at the last measurement, step 500: falls 2x)" in finding.message
    assert "the train loss stayed near 2.30 until step 450" in finding.message


def test_the_closing_line_names_as_passed_only_the_checks_that_had_data_and_says_why_the_others_had_none():
    off = {"steps": 100, "classes": 10, "final": {"val_acc": 0.8, "test_acc": 0.8},
           "config": {**config(act="relu", norm="bn"), "diag": {"every": 0, "probe_every": 0, "bn_eval_gap": False}}}
    said = closing(off)
    assert said.startswith("no findings: these checks passed - divergence, zero-init symmetry, accuracy above "
                           "chance; not measured - ")
    for check in ("dead ReLUs (off: diag.probe_every=0)", "signal over depth (off: diag.every=0)",
                  "BN train/eval gap (off: diag.bn_eval_gap=false)", "batch vs noise scale (off: diag.noise_every=0)",
                  "sharpness (off: diag.curvature_every=0)"):
        assert check in said.split("not measured - ")[1]
    assert "saturation" not in said  # a ReLU net has nothing to saturate: neither passed nor missing
    none = closing({"steps": 0, "status": "interrupted", "config": config(act="relu")})
    assert "these checks passed" not in none and "signal over depth (no step was trained)" in none
    no_val = closing({**off, "config": {**off["config"], "diag": {"every": 10, "probe_every": 10,
                                                                 "bn_eval_gap": True},
                                        "data": {"val_size": 0}}})
    assert "dead ReLUs (no held-out examples to probe: data.val_size=0)" in no_val
    assert "BN train/eval gap (no validation split: data.val_size=0)" in no_val
    # a probe is judged on what a probe measures: nothing about training is listed
    probe = closing({"command": "probe", **layers(features_0_act={"act_std": 1.0}, features_1_act={"act_std": 1.0}),
                     "config": config(probe_jacobian="off")})
    assert probe == "no findings: these checks passed - divergence, zero-init symmetry, signal over depth; not " \
                    "measured - dead ReLUs (not measured), Jacobian depth scale (off: probe.jacobian=off)"


def test_one_cause_gives_one_finding_with_all_its_evidence():
    # the signal falls forward, its gradient falls backward, χ₁ = 0.5 over 30 layers: one finding
    probe = {"command": "probe", "config": config(act="relu", init="lecun_normal"),
             **layers(**{f"features_{i}_act": {"act_std": 0.5 ** (i / 2), "grad_norm": 0.5 ** ((29 - i) / 2)}
                         for i in range(30)}),
             "jacobian": {"method": "exact", "sigma_w2": 1.0, "depths": [[1, 0.5, 0.3, 9, 0.5, None],
                                                                         [30, 1e-9, 1e-9, 9, 0.5, 0.5]],
                          "chi_measured": 0.5, "chi_predicted": 0.5}}
    (finding,) = findings(probe)
    assert finding.rule == "vanishing_signal"
    for evidence in ("activation std falls", "the gradient w.r.t. the layers' outputs falls", "χ₁ = 0.50 measured",
                     "a net does not train, and it has 30"):
        assert evidence in finding.message
    assert "Jacobian depth scale" not in closing(probe)  # its evidence is in the finding: it did not "pass"
    # saturated sigmoids whose gradient still grows backward: one finding, and nothing claims the gradient is ~0
    sigmoid = {"command": "probe", "config": config(act="sigmoid", init="normal"),
               **layers(**{f"features_{i}_act": {"saturation": 0.8, "act_std": 0.45, "grad_norm": 3.0 ** (29 - i)}
                           for i in range(30)})}
    (finding,) = findings(sigmoid)
    assert finding.rule == "exploding_signal" and "80% of outputs saturated" in finding.message
    assert "nearly zero" not in finding.message and "saturation" not in closing(sigmoid)
    assert "a smaller init.std" in finding.remedy


def test_remedies_are_settings_the_tool_accepts_for_this_run():
    vanishing = CASES["vanishing_signal"][0]
    # init.std only where the init has it; never residual paths, which the tool does not build
    assert "init.std" not in findings({**vanishing, "config": config(init="lecun_normal")})[0].remedy
    assert "a larger init.std" in findings({**vanishing, "config": config(init="normal")})[0].remedy
    # a tanh net whose signal vanishes at 0% saturation is not told to change its activation
    tanh = {**layers(features_0_act={"act_std": 1.0, "saturation": 0.0},
                     features_9_act={"act_std": 1e-4, "saturation": 0.0}), "config": config(act="tanh")}
    (finding,) = findings(tanh)
    assert "act=" not in finding.remedy and "xavier_normal" in finding.remedy
    for case in CASES.values():
        for f in findings(case[0]):
            assert "residual" not in f.remedy
    # a probe does not train: no learning rate, no clipping, no batch
    growing = {**layers(features_0_act={"grad_norm": 1e6}, features_9_act={"grad_norm": 1.0}), "layer_history": {
        "grad_norm": {"features.0.act": [[1, 1.0], [50, 1e6]], "features.9.act": [[1, 1.0], [50, 1.0]]}}}
    trained = findings(growing)[0].remedy
    assert "learning rate" in trained and "clip=norm" in trained
    probe = findings({**growing, "command": "probe", "nonfinite": {"step": 1, "layer": "features.5.linear",
                                                                   "tensor": "activation"}})
    for f in probe:
        assert not any(word in f.remedy for word in ("learning rate", "clip", "batch")), f
    # norm=gn only where its groups divide the widths, which the tool checks
    wide = {**vanishing, "config": {"model": {"name": "mlp", "width": 300}}}
    assert "norm=ln" in findings(wide)[0].remedy and "norm=gn" not in findings(wide)[0].remedy


def test_a_gradient_that_vanishes_across_batchnorm_at_a_tiny_batch_points_at_the_norm_not_the_learning_rate():
    # batch 2: each BN layer passes ~1/100 of the gradient back to its input (measured at these ratios here)
    names = ["features.0.linear", "features.0.norm", "features.0.act", "features.1.linear", "features.1.norm",
             "features.1.act"]
    grads = [2e-6, 4e-4, 5e-4, 6e-3, 3e-1, 4e-1]
    roles = ["weight", "norm", "act"] * 2
    case = {"layers": {n: {"role": r, "grad_norm": g} for n, r, g in zip(names, roles, grads, strict=True)},
            "steps": 100, "config": config(norm="bn")}
    (finding,) = findings(case)
    assert finding.rule == "vanishing_signal"
    across = (4e-4 / 2e-6) * (3e-1 / 6e-3)  # the falls across the two norm layers, computed here
    assert f"changing {across:.0e}x across the norm layers (features.0.norm, features.1.norm)" in finding.message
    assert "learning rate" not in finding.remedy and "batch-independent norm (norm=ln)" in finding.remedy
    # the train/eval gap of the same BN layers is the same cause: evidence in that one finding
    gap = {**case, "history": [{"step": 100, "epoch": 1, "val_loss": 1, "val_acc": 0.4,
                                "val_acc_bn_train_mode": 0.2}]}
    (finding,) = findings(gap)
    assert "BatchNorm: val accuracy is 20 points lower in train mode" in finding.message
    assert "BN train/eval gap" not in closing(gap)


def test_sharpness_says_edge_of_stability_only_where_lambda_max_held_at_the_threshold():
    (edge,) = findings(CASES["sharpness"][0])
    assert edge.severity == "info" and "edge of stability" in edge.message
    assert "stayed at 1.1-1.1x the threshold (median 1.1x)" in edge.message  # 45/40, 42/40
    above = {"curvature": {"history": [[10, 5, 50, 40], [20, 96, 60, 40], [30, 90, 60, 40]]}, "steps": 30,
             "train_curve": [[20, 0.9], [30, 0.7]]}
    (finding,) = findings(above)
    assert finding.severity == "warning" and "edge of stability" not in finding.message
    assert "stayed at 2.2-2.4x the threshold" in finding.message and "the train loss fell from 0.90 to 0.70" in \
        finding.message


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
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert "zero_init_symmetry" in {f["rule"] for f in stored["findings"]}
    # the history the rules read is stored: every measuring step, every layer in forward order
    assert list(stored["layer_history"]["act_std"]) == [n for n in stored["layers"] if "act_std" in
                                                        stored["layers"][n]]
    assert [s for s, _ in stored["layer_history"]["act_std"]["features.0.act"]][:2] == [1, 2]
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
    # no GN/LN run to compare with: the measured control is the larger batch; GN is not claimed to be better
    assert finding.remedy.startswith("a batch of 32 (measured 23 points better)") and "not in this sweep" in \
        finding.remedy
    assert not bn_small_batch([bn_run(2, 0.80), bn_run(32, 0.83)], T)
    assert not bn_small_batch([bn_run(2, 0.40, "gn"), bn_run(32, 0.83, "gn")], T)


def test_small_batch_bn_is_set_against_the_sweeps_groupnorm_runs_and_recommends_them_only_where_better():
    runs = [bn_run(2, 0.60), bn_run(32, 0.83), bn_run(2, 0.80, "gn"), bn_run(32, 0.81, "gn")]
    (finding,) = bn_small_batch(runs, T)
    assert "BN at batch 2: val accuracy 23 points below batch 32, while GN drops 1 over the same batches" in \
        finding.message
    assert finding.remedy.startswith("use norm=gn (0.80 at batch 2)")
    worse = [bn_run(2, 0.60), bn_run(32, 0.83), bn_run(2, 0.50, "gn"), bn_run(32, 0.81, "gn")]
    (finding,) = bn_small_batch(worse, T)
    assert "norm=gn" not in finding.remedy and finding.remedy.startswith("a batch of 32")


def test_a_rule_speaks_once_for_all_its_layers_with_the_range():
    case = layers(**{f"features_{i}_act": {"saturation": 0.89 + i / 300} for i in range(20)})
    (finding,) = findings({**case, "config": config(act="sigmoid")})
    assert finding.message.startswith("89-95% of outputs saturated (in the flat tails) in 20 of 20 sigmoid layers "
                                      "(features.0.act, features.1.act, ..., features.19.act)")


def test_findings_come_errors_first_and_a_healthy_run_says_what_passed():
    case = {**CASES["saturation"][0], **CASES["did_not_learn"][0]}
    assert [f.severity for f in run_findings(metrics(case), T)] == ["error", "warning", "info"]
    (healthy,) = run_findings(metrics(CASES["saturation"][1]), T)
    assert healthy.rule == "no_findings" and healthy.severity == "info"
    assert "these checks passed - divergence, zero-init symmetry, saturation; not measured - " in healthy.message
    assert "signal over depth (not measured)" in healthy.message  # the case measured saturation alone
    one = closing(layers(features_0_act={"act_std": 1.0}))
    assert "signal over depth (1 layer measured, 2 needed)" in one


def test_a_nan_before_any_update_points_at_the_init_not_the_learning_rate():
    at_step_1 = {"nonfinite": {"step": 1, "layer": "features.5.linear", "tensor": "activation"}}
    for case in (at_step_1, {**at_step_1, "command": "probe"}):
        (finding,) = findings(case)
        assert "learning rate" not in finding.remedy and "init" in finding.remedy
    (probe,) = findings({**at_step_1, "command": "probe"})
    assert probe.message.startswith("the signal overflows to NaN/Inf at initialisation")


def test_a_signal_that_vanishes_to_exactly_zero_is_still_a_finding():
    case = layers(features_0_act={"act_std": 1.0, "grad_norm": 0.0}, features_9_act={"act_std": 0.0,
                                                                                      "grad_norm": 1.0})
    (finding,) = [f for f in findings(case) if f.rule == "vanishing_signal"]
    assert "activation std falls" in finding.message and "gradient w.r.t. the layers' outputs falls" in \
        finding.message


def test_a_signal_that_overflows_to_inf_is_exploding():
    case = layers(features_0_act={"act_std": 1.0}, features_5_act={"act_std": math.inf})
    assert "exploding_signal" in {f.rule for f in findings(case)}


def test_no_remedy_names_the_setting_already_in_use():
    dead = CASES["dead_relu"][0]
    assert "kaiming_normal" in findings(dead)[0].remedy
    assert "kaiming_normal" not in findings({**dead, "config": config(act="relu", init="kaiming_normal")})[0].remedy
    flat = CASES["saturation"][0]
    assert "xavier_normal" in findings(flat)[0].remedy
    in_use = findings({**flat, "config": config(act="sigmoid", init="xavier_normal", norm="bn")})[0].remedy
    assert "xavier_normal" not in in_use and "normalisation" not in in_use and "relu" in in_use
    divergence = {**CASES["divergence"][0], "config": config(clip="norm", norm="gn")}
    assert findings(divergence)[0].remedy == "lower the learning rate"
    # centred inputs are never told to centre the inputs, however much the signs agree (a high lr does that)
    zigzag = CASES["non_centred_inputs"][0]
    assert not findings({**zigzag, "config": config(data_center=True)})


def test_the_tour_checker_finds_a_claim_the_event_files_do_not_show(tmp_path):
    """findings_check, which the lecture tour's tests run on every tour command, against the old closing line: a
    diag=off run said every check passed."""
    from findings_check import contradictions

    result = run_cli(["train", *TINY, "diag=off"], tmp_path)
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("outputs/*/*/metrics.json")
    assert contradictions(path.parent) == []
    stored = json.loads(path.read_text())
    stored["findings"] = [{"rule": "no_findings", "severity": "info", "remedy": "", "layer": None, "step": None,
                           "value": None, "message": "no findings: these checks passed - divergence, dead ReLUs, "
                                                     "signal over depth, BN train/eval gap"}]
    path.write_text(json.dumps(stored))
    assert contradictions(path.parent) == [f"'{name}' passed, but nothing of it was measured"
                                           for name in ("dead ReLUs", "signal over depth", "BN train/eval gap")]


def test_near_criticality_the_jacobian_finding_says_how_much_the_mean_changed_over_the_depth():
    # tanh at σ_w² = 1: χ₁ = 0.90 is within 10% of critical, but 0.9^29 is a 21x fall over 30 layers
    case = {"command": "probe", "jacobian": {"method": "exact", "sigma_w2": 1.0,
                                             "depths": [[1, 1.0, 0.5, 3, 0.0, None], [30, 0.047, 0.4, 90, 0.0, 0.9]],
                                             "chi_measured": 0.9, "chi_predicted": 0.9}}
    (finding,) = findings(case)
    assert f"shrinks {1 / 0.9 ** 29:.2g}x over 30 layers (within ~6ξ ≈ 57 layers" in finding.message
    assert "holds over depth" not in finding.message
    (critical,) = findings(CASES["jacobian_depth"][0])
    assert "holds over depth" in critical.message


def test_a_zero_init_is_one_finding_with_its_dead_units_and_saturation_says_where_it_ended():
    zeros = {**layers(features_0_act={"dead": 1.0}, features_1_act={"dead": 1.0}),
             "symmetric_layers": ["features.0.linear", "features.1.linear"],
             "dead_history": {"features.0.act": [[1, 1.0], [50, 1.0]], "features.1.act": [[1, 1.0], [50, 1.0]]}}
    (finding,) = findings(zeros)
    assert finding.rule == "zero_init_symmetry"
    assert "; 100% dead ReLU units in 2 of 2 ReLU layers (features.0.act, features.1.act) from initialisation" in \
        finding.message
    assert "dead ReLUs" not in closing(zeros)  # said by the symmetry finding: neither its own nor passed
    flat = {**layers(features_0_act={"saturation": 0.9}), "config": config(act="sigmoid"),
            "layer_history": history("saturation", features_0_act=[[1, 0.73], [40, 0.8], [78, 0.9]])}
    (saturated,) = findings(flat)
    assert "73% of outputs saturated (in the flat tails) in 1 of 1 sigmoid layers (features.0.act) at " \
           "initialisation (90% at the last measurement, step 78)" in saturated.message
