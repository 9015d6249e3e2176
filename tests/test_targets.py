"""The user's own network and components (`_target_`), and layers discovered on any nn.Module: a residual CNN, an
activation and a norm the project has never seen (tests/fixtures/yournets), from the command line and in-process."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_DATA, compose_config, run_cli
from torch import nn

from diagnose.build import build_loss, build_model
from diagnose.cli.overrides import with_targets
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.measured import activation_shape, depends_on_batch
from diagnose.components.norms import NORMS
from diagnose.diagnostics.layers import discover_layers, measured_layers
from diagnose.errors import UserError
from diagnose.kinds import BATCH, EXAMPLE, IDENTITY, RELU_LIKE, SATURATING, SMOOTH

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # as `diagnose` finds them: on the current directory or PYTHONPATH
from yournets.nets import BatchCentre, FunctionalNet, GatedNet, PixelNorm, ResNet  # noqa: E402

SHAPE = (1, 8, 8)
TARGET_TINY = [*TINY_DATA, "model._target_=yournets.nets.ResNet", "model.width=4", "model.blocks=1"]


class Elementwise(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


SHAPES = {
    RELU_LIKE: [lambda x: torch.relu(x - 1) + 0.5, lambda x: -torch.relu(-x), lambda x: 3 * torch.relu(x + 2),
                lambda x: torch.where(x > 0, x * x, torch.zeros_like(x))],
    SATURATING: [lambda x: x.clamp(-1, 1), torch.sigmoid, torch.tanh, F.softsign, F.hardsigmoid, F.relu6],
    SMOOTH: [F.softplus, lambda x: x * torch.sigmoid(x), F.gelu, F.elu, F.leaky_relu, F.mish, torch.sin],
    IDENTITY: [lambda x: 2 * x - 1],
}
CASES = [(kind, i) for kind, fs in SHAPES.items() for i in range(len(fs))]


@pytest.mark.parametrize(("kind", "i"), CASES, ids=[f"{k}-{i}" for k, i in CASES])
def test_an_unknown_activation_is_classified_by_its_measured_shape(kind, i):
    assert activation_shape(Elementwise(SHAPES[kind][i]), "f").kind == kind


def test_a_measured_saturating_activation_saturates_where_sigmoid_does():
    """The saturation rule from the measured tails, on sigmoid, agrees with the registry's own rule for it."""
    from diagnose.components.activations import ACTIVATIONS
    from diagnose.config import DiagConfig

    y = torch.sigmoid(torch.linspace(-8, 8, 1001))
    measured = activation_shape(nn.Sigmoid(), "sigmoid").saturated(y, DiagConfig())
    assert torch.equal(measured, ACTIVATIONS["sigmoid"].saturated(y, DiagConfig()))
    assert 0.2 < measured.float().mean() < 0.8


def test_a_norm_is_batch_or_per_example_by_measuring_it():
    x = torch.randn(4, 6, 5, 5)
    assert depends_on_batch(nn.BatchNorm2d(6), x) and depends_on_batch(BatchCentre(6), x)
    assert not depends_on_batch(PixelNorm(6), x) and not depends_on_batch(nn.GroupNorm(2, 6), x)


def test_discovery_follows_the_run_order_of_a_residual_net_and_leaves_it_untouched():
    torch.manual_seed(0)
    model = ResNet(SHAPE, 10, width=4, blocks=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = discover_layers(model, torch.randn(8, *SHAPE))
    block = ["conv1", "norm1", "act1", "conv2", "norm2", "act2"]
    assert [layer.name for layer in found.layers] == [
        "stem", "stem_act", *(f"blocks.{b}.{n}" for b in range(2) for n in block), "head"]
    roles = {layer.name: (layer.role, layer.kind) for layer in found.layers}
    assert roles["blocks.0.norm1"] == ("norm", BATCH) and roles["blocks.1.norm2"] == ("norm", EXAMPLE)
    assert roles["stem_act"] == ("act", SMOOTH) and roles["head"] == ("weight", "weight")
    assert found.unseen is None
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "BN's running statistics must be left as they were"


# identity: discovery leaves nn.Identity out (in a user's network it is a placeholder, a skip's shortcut), where the
# tool's own blocks declare it their activation
BUILT_IN = ([("model=cnn", "model.widths=[8,8]", f"act={act}") for act in ACTIVATIONS if act != "identity"]
            + [("model=cnn", "model.widths=[8,8]", f"norm={norm}") for norm in NORMS]
            + [("model=mlp", "model.width=8", "model.depth=2", "act=sigmoid", f"norm={norm}") for norm in NORMS])


@pytest.mark.parametrize("options", BUILT_IN, ids=[",".join(o) for o in BUILT_IN])
def test_discovery_of_the_tools_own_models_agrees_with_their_declared_layers(options):
    """Another way to the same list: the built-in models' blocks name their layers; discovery finds them by running."""
    from diagnose.build import activation_of, norm_of

    config = compose_config([*TINY_DATA, *options])
    model = build_model(config, SHAPE, 10)
    declared = measured_layers(model, activation_of(config.act), norm_of(config.norm))
    found = discover_layers(model, torch.randn(4, *SHAPE)).layers
    assert [(la.name, la.role, la.kind) for la in found] == [(la.name, la.role, la.kind) for la in declared]


def test_act_kind_overrides_what_measuring_finds():
    found = discover_layers(ResNet(SHAPE, 10, width=4, blocks=1), torch.randn(4, *SHAPE), act_kind=SATURATING)
    assert {layer.kind for layer in found.layers if layer.role == "act"} == {SATURATING}


def test_an_activation_called_as_a_function_is_said_once_with_the_layers_measured_instead():
    found = discover_layers(FunctionalNet(SHAPE, 10), torch.randn(4, *SHAPE))
    assert [layer.role for layer in found.layers] == ["weight"] * 3
    assert found.unseen.count("relu") == 1 and "fc1, fc2 are measured in their place" in found.unseen
    # a function called inside a layer the tool measures (a norm's sigmoid gate, tanh inside nn.Tanh) is seen
    gated = discover_layers(GatedNet(SHAPE, 10), torch.randn(4, *SHAPE))
    assert [(la.name, la.role, la.kind) for la in gated.layers] == [
        ("fc", "weight", "weight"), ("norm", "norm", EXAMPLE), ("act", "act", SATURATING), ("out", "weight", "weight")]
    assert gated.unseen is None


def test_a_target_activation_and_norm_go_into_the_tools_own_cnn():
    config = compose_config(with_targets([*TINY_DATA, "model.widths=[4,8]", "act._target_=yournets.nets.Swish",
                                          "act.beta=2.0", "norm._target_=yournets.nets.PixelNorm"]))
    model = build_model(config, SHAPE, 10)
    assert model.features[0].act.beta == 2.0 and isinstance(model.features[0].norm, PixelNorm)
    from diagnose.build import activation_of, norm_of

    act, norm = activation_of(config.act), norm_of(config.norm)
    assert (act.kind, norm.kind) == (SMOOTH, EXAMPLE)
    layers = measured_layers(model, act, norm)
    assert [la.kind for la in layers if la.role == "act"] == [SMOOTH, SMOOTH]


def test_a_target_model_gets_the_datas_shape_and_its_own_arguments():
    config = compose_config(with_targets(TARGET_TINY))
    assert config.model.args == {"width": 4, "blocks": 1}
    model = build_model(config, (3, 8, 8), 7)
    assert model.stem.in_channels == 3 and model.head.out_features == 7 and len(model.blocks) == 1


BAD_TARGETS = {
    "no such module": (["model._target_=nomodule.Net"], r"no module nomodule was found in .* or on PYTHONPATH"),
    "no such attribute": (["model._target_=yournets.nets.Nope"], r"has no Nope\. It defines: .*ResNet"),
    "not a module": (["model._target_=yournets.nets.NOT_A_MODULE"], r"is a int, not a torch.nn.Module class"),
    "constructor raises": (["model._target_=yournets.nets.Raises", "model.width=3"],
                           r"Raises\(.*width=3\) raised ValueError: width 3 is not supported"),
    "wrong output shape": (["model._target_=yournets.nets.WrongOutput"], r"returns \(2, 11\) .* must return \(2, 10\)"),
    "activation not a module": (["act._target_=yournets.nets.NOT_A_MODULE"], r"act._target_=.* not a torch.nn.Module"),
    "both an option and a target": (["act=relu", "act._target_=yournets.nets.Swish"], r"pick one"),
    "target without a path": (["model=target"], r"model=target needs model._target_=<module>.<Class>"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_a_bad_target_is_one_line_naming_what_was_tried(case):
    args, message = BAD_TARGETS[case]
    with pytest.raises(UserError, match=message) as raised:
        config = compose_config(with_targets([*TINY_DATA, *args]))
        from diagnose.build import activation_of

        activation_of(config.act)
        build_model(config, SHAPE, 10)
        build_loss(config.loss, 10)
    assert "\n" not in str(raised.value)


def _user_folder(tmp_path: Path) -> Path:
    """A user's folder holding their package, where they run diagnose."""
    shutil.copytree(FIXTURES / "yournets", tmp_path / "yournets", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("args", [
    pytest.param(["model._target_=yournets.nets.Nope"], id="cannot import"),
    # found as the run is built, after the data loaded (8 s): the folder Hydra made is removed
    pytest.param(["model._target_=yournets.nets.WrongOutput"], id="wrong output shape", marks=pytest.mark.slow)])
def test_a_bad_target_exits_2_and_leaves_no_folder(args, tmp_path):
    result = run_cli(["train", *TINY_DATA, *args], _user_folder(tmp_path))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "_target_=yournets.nets." in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout and not (tmp_path / "outputs").exists()
    if "Nope" in args[0]:  # found by the command line's check, before the data loads or Hydra makes a folder
        assert result.stderr.startswith("Error: ")


@pytest.mark.slow
def test_your_own_network_trains_with_findings_and_sweeps_from_the_command_line(tmp_path):
    cwd = _user_folder(tmp_path)
    measuring = ["diag.every=2", "diag.probe_every=2", "steps=6"]
    saturating = ["model.act=clamp", "init=normal", "init.std=2.0"]  # its own activation, saturated by a large init
    result = run_cli(["train", *TARGET_TINY, *saturating, *measuring], cwd)
    assert result.returncode in (0, 1), result.stderr  # 1: a finding said it did not learn in 6 steps
    said = " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in result.stderr and "run completed" in said
    (metrics_file,) = (cwd / "outputs").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    layers = metrics["layers"]
    assert layers["blocks.0.act2"]["role"] == "act" and layers["blocks.0.act2"]["kind"] == SATURATING
    assert layers["blocks.0.norm1"]["kind"] == BATCH and layers["blocks.0.norm2"]["kind"] == EXAMPLE
    assert "act_std" in layers["blocks.0.act2"] and "saturation" in layers["blocks.0.act2"]
    (saturated,) = [f for f in metrics["findings"] if f["rule"] == "saturation"]
    assert "your model" in saturated["remedy"] and "act=" not in saturated["remedy"]
    assert "saturated" in said and "the init of your model's layers" in said  # printed, not only stored

    # a sweep, the package found on PYTHONPATH instead of the current directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    result = run_cli(["train", "-m", *TARGET_TINY[:-2], "model.blocks=1", "model.width=2,4"], elsewhere, env=env)
    assert result.returncode in (0, 1), result.stderr
    jobs = sorted(p.parent.name for p in (elsewhere / "outputs").rglob("metrics.json"))
    assert len(jobs) == 2 and all("model.args.width" in job or "width" in job for job in jobs), jobs


@pytest.mark.slow
def test_probe_and_check_run_on_your_own_network(tmp_path):
    cwd = _user_folder(tmp_path)
    result = run_cli(["probe", "model._target_=yournets.nets.ResNet", "model.width=4", "probe.shape=[1,8,8]",
                      "probe.batch=16", "device=cpu"], cwd)
    assert result.returncode == 0, result.stderr
    assert "blocks.0.act2" in result.stdout + result.stderr
    result = run_cli(["check", *TINY_DATA, "model._target_=yournets.nets.ResNet", "model.width=4",
                      "act._target_=yournets.nets.Swish", "check.overfit_steps=5", "check.shuffled_steps=5",
                      "check.lr_range_steps=5", "check.examples=64"], cwd)
    assert result.returncode in (0, 1), result.stderr
    (check_file,) = (cwd / "outputs").rglob("check.json")
    checks = {c["name"]: c for c in json.loads(check_file.read_text())["checks"]}
    independent = checks["examples stay independent"]
    assert independent["verdict"] == "note" and "blocks.0.norm1" in independent["remedy"]  # its BN, by name
    assert checks["gradients match finite differences"]["verdict"] == "pass"


def _target_run(**per_layer: dict) -> list:
    """The findings of a run of the user's own model (`model._target_`) whose layers were measured as given."""
    from diagnose.config import Thresholds
    from diagnose.findings import run_findings
    from diagnose.results import RunMetrics

    config = {"model": {"name": "target", "_target_": "yournets.nets.ResNet"}, "act": {"name": "relu"},
              "norm": {"name": "bn"}, "init": {"name": "default"}}
    layers = {name.replace("_", "."): values for name, values in per_layer.items()}
    metrics = RunMetrics.from_json({"status": "completed", "command": "train", "config": config, "steps": 100,
                                    "layers": layers})
    return [f for f in run_findings(metrics, Thresholds()) if f.rule not in ("checks", "no_findings")]


def test_findings_on_your_own_model_fire_on_its_layers_kinds_and_say_remedies_in_its_terms():
    (saturated,) = _target_run(blocks_0_act1={"role": "act", "kind": SATURATING, "saturation": 0.9})
    assert saturated.rule == "saturation" and "your model" in saturated.remedy and "act=" not in saturated.remedy
    (dead,) = _target_run(blocks_0_act1={"role": "act", "kind": RELU_LIKE, "dead": 0.8})
    assert dead.rule == "dead_relu" and "init=" not in dead.remedy and "your model's layers" in dead.remedy
    # smooth activations: neither rule has anything to say, whatever the tool's unused act group holds
    assert _target_run(blocks_0_act1={"role": "act", "kind": SMOOTH, "act_std": 1.0}) == []


def test_act_kind_on_the_command_line_overrides_a_target_activations_measured_kind():
    from diagnose.build import activation_of

    measured_kind = activation_of(compose_config(with_targets([*TINY_DATA, "act._target_=yournets.nets.Clamp"])).act)
    said = activation_of(compose_config(with_targets([*TINY_DATA, "act._target_=yournets.nets.Clamp",
                                                       "act.kind=smooth"])).act)
    y = torch.tensor([-3.0, -1.99, 0.0, 1.99, 2.0])
    from diagnose.config import DiagConfig

    assert measured_kind.kind == SATURATING and said.kind == SMOOTH
    # the measured tails are at -2 and 2: within 2 % of the range 4 (0.08) of either is saturated
    assert measured_kind.saturated(y, DiagConfig()).tolist() == [True, True, False, True, True]


def test_a_target_loss_is_built_with_its_arguments_and_trains_like_the_registrys():
    config = compose_config(with_targets([*TINY_DATA, "loss._target_=torch.nn.CrossEntropyLoss",
                                          "loss.label_smoothing=0.1"]))
    loss = build_loss(config.loss, 10)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    assert loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item())


def test_a_probe_of_a_network_with_functional_activations_measures_its_weight_layers(tmp_path, monkeypatch):
    from diagnose.probe import probe

    monkeypatch.chdir(tmp_path)
    config = compose_config(with_targets(["model._target_=yournets.nets.FunctionalNet", "probe.shape=[1,8,8]",
                                          "probe.batch=8", "device=cpu"]), "probe")
    metrics = probe(config, tmp_path)
    assert [name for name, r in metrics.layers.items()] == ["fc1", "fc2", "out"] and metrics.jacobian is None


def test_torch_activations_the_registry_lacks_are_measured_and_weight_layers_are_not_activations():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.PReLU(), nn.Linear(8, 8), nn.Hardtanh(), nn.Dropout(0.1),
                          nn.Linear(8, 8), nn.ReLU6(), nn.Softplus(), nn.Linear(8, 3))
    found = discover_layers(model, torch.randn(4, *SHAPE))
    acts = {layer.name: layer.kind for layer in found.layers if layer.role == "act"}
    assert acts == {"2": SMOOTH, "4": SATURATING, "7": SATURATING, "8": SMOOTH}  # no Flatten, Dropout or Linear
    assert [layer.name for layer in found.layers if layer.role == "weight"] == ["1", "3", "6", "9"]
