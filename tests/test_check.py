"""`diagnose check`: every check passes on a healthy setup and fails on its planted fault."""

import copy
import json
import math

import pytest
import torch
from conftest import TINY_DATA, compose_config, run_cli
from torch import nn

from diagnose import check as checks
from diagnose.build import build_run
from diagnose.check import Subject, gradient_check, run_checks

HEALTHY = [*TINY_DATA, "model=mlp", "model.depth=2", "model.width=32", "norm=none", "batch=32",
           "check.examples=64", "check.shuffled_steps=40"]


def subject(*overrides: str, base: tuple[str, ...] = tuple(HEALTHY)) -> Subject:
    config = compose_config([*base, *overrides], config_name="check")
    run = build_run(config)
    return Subject(run, config, copy.deepcopy(run.model.state_dict()))


def test_a_healthy_setup_passes_every_check_and_writes_its_table(tmp_path):
    found = run_checks(compose_config(HEALTHY, config_name="check"), tmp_path)
    assert [c.name for c in found] == ["loss at initialisation", "overfit 32 examples", "examples stay independent",
                                       "inputs centred", "labels balanced", "shuffled labels stay at chance",
                                       "learning-rate range test", "gradients match finite differences"]
    assert {c.name: c.verdict for c in found if c.verdict != "pass"} == {"learning-rate range test": "note"}
    assert (tmp_path / "lr_range.png").exists()


def test_the_expected_loss_at_init_is_derived_for_each_loss():
    s = subject("loss=margin")  # the sum over the C - 1 wrong classes of max(0, m - 0) at equal outputs: (C - 1) m
    assert float(checks.loss_at_init(s).expected.split()[0]) == pytest.approx(9.0, rel=1e-3)
    s = subject("loss=focal", "loss.gamma=2")  # (1 - 1/C)^γ ln C
    assert float(checks.loss_at_init(s).expected.split()[0]) == pytest.approx(0.9 ** 2 * math.log(10), rel=1e-3)
    s = subject()  # cross-entropy: ln C
    assert float(checks.loss_at_init(s).expected.split()[0]) == pytest.approx(math.log(10), rel=1e-3)


def test_a_last_layer_scaled_wrong_fails_the_loss_at_init():
    s = subject()
    s.state = {k: v * 100 if k.startswith("head") else v for k, v in s.state.items()}
    found = checks.loss_at_init(s)
    assert found.verdict == "fail" and "scale the head down" in found.remedy


def test_a_zero_init_cannot_overfit_one_batch():
    assert checks.overfit_one_batch(subject()).verdict == "pass"
    found = checks.overfit_one_batch(subject("init=zeros"))
    assert found.verdict == "fail" and "init=zeros" in found.remedy


def test_batchnorm_couples_the_examples_and_a_wrong_reshape_fails():
    assert checks.examples_independent(subject()).verdict == "pass"
    coupled = checks.examples_independent(subject("norm=bn"))
    assert coupled.verdict == "note" and "batch's statistics" in coupled.remedy and coupled.value > 1e-3

    class MixesTheBatch(nn.Module):  # a reshape bug: rolls features across the batch dimension
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1).roll(x.shape[1] // 2).reshape(x.shape)

    broken = subject()
    broken.run.model.head = nn.Sequential(MixesTheBatch(), broken.run.model.head)
    broken.state = copy.deepcopy(broken.run.model.state_dict())
    assert checks.examples_independent(broken).verdict == "fail"


def test_a_broken_custom_layer_fails_the_gradient_check():
    class DoubledGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.tanh()

        @staticmethod
        def backward(ctx, grad):  # wrong: tanh' is 1 - tanh², and doubled
            return 2 * grad

    class BrokenTanh(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return DoubledGradient.apply(x)

    torch.manual_seed(0)
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    healthy = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    assert gradient_check(healthy, nn.CrossEntropyLoss(), x, y)[0] < 1e-6
    broken = nn.Sequential(nn.Linear(6, 8), BrokenTanh(), nn.Linear(8, 3))
    error, where = gradient_check(broken, nn.CrossEntropyLoss(), x, y)
    assert error > 0.1 and where.startswith("0.")  # the layer before the broken one gets the wrong gradient


def test_the_gradient_check_passes_a_deep_relu_cnn_whose_entries_have_tiny_gradients():
    s = subject("model=cnn", "model.widths=[8,8,8]", "model.blocks=3", "norm=none", "data.size=16",
                base=tuple(TINY_DATA))
    for seed in range(3):
        torch.manual_seed(seed)
        s.run.model.load_state_dict(s.state)
        assert checks.gradients_correct(s).verdict == "pass"


def test_a_bias_just_before_batchnorm_passes_the_gradient_check_and_a_broken_layer_behind_it_still_fails():
    """BN removes each channel's mean, so a conv bias just before it has a true gradient of 0 (autograd: ~1e-17 in
    float64): README's own network failed here with a relative error of 1 between two zeros."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 2, 5, 5), torch.randint(0, 3, (4,))

    def net(act: nn.Module) -> nn.Module:
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), act,
                             nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
                             nn.Linear(100, 3))

    assert gradient_check(net(nn.Tanh()), nn.CrossEntropyLoss(), x, y)[0] < 1e-6

    class DoubledGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.tanh()

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    class BrokenTanh(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return DoubledGradient.apply(x)

    torch.manual_seed(0)
    error, where = gradient_check(net(BrokenTanh()), nn.CrossEntropyLoss(), x, y)
    assert error > 0.1 and where.startswith(("0.", "1."))  # the layers before the broken one: wrong gradients


def test_dropout_does_not_fail_the_overfit_check():
    assert checks.overfit_one_batch(subject("model.dropout=0.5")).verdict == "pass"


def test_labels_that_stay_with_their_examples_learn_above_chance_and_fail(monkeypatch):
    assert checks.shuffled_labels(subject()).verdict == "pass"
    monkeypatch.setattr(checks, "shuffle", lambda n, generator, device: torch.arange(n, device=device))
    leaked = checks.shuffled_labels(subject("check.shuffled_steps=100"))
    assert leaked.verdict == "fail" and "leak" in leaked.remedy


def test_uncentred_inputs_and_missing_classes_are_said():
    raw = checks.input_statistics(subject("data.center=false"))
    assert raw[0].verdict == "note" and "zig-zag" in raw[0].remedy
    lopsided = subject()
    lopsided.run.data.train_y[lopsided.run.data.train_y == 3] = 4  # class 3 never seen in training
    assert checks.input_statistics(lopsided)[1].verdict == "fail"


def test_a_range_where_no_lr_trains_fails_the_range_test(tmp_path):
    s = subject("check.lr_min=1e-12", "check.lr_max=1e-11")
    found = checks.lr_range(s, tmp_path)
    assert found.verdict == "fail" and "the loss never fell" in found.measured
    assert checks.lr_range(subject(), tmp_path).verdict == "note"


def test_the_command_exits_1_when_a_check_fails_and_writes_check_json(tmp_path):
    result = run_cli(["check", *HEALTHY, "init=zeros", "hydra.run.dir=out"], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    saved = json.loads((tmp_path / "out" / "check.json").read_text())
    assert {c["name"]: c["verdict"] for c in saved["checks"]}["overfit 32 examples"] == "fail"
    assert "failed: overfit 32 examples" in " ".join((result.stdout + result.stderr).split())
    from conftest import events_of

    assert "check/text_summary" in events_of(tmp_path / "out").Tags()["tensors"]  # the table in the Text tab
    assert "check/lr_range" in events_of(tmp_path / "out").Tags()["images"]


def test_a_sweep_of_checks_exits_1_naming_the_jobs_that_failed(tmp_path):
    for job, verdict in (("init=default", "pass"), ("init=zeros", "fail")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "check.json").write_text(json.dumps({"checks": [{"name": "x", "verdict": verdict}]}))
    assert checks.sweep_outcome(tmp_path) == (1, "checks failed in 1 of the sweep's 2 jobs: init=zeros.")
    (tmp_path / "init=zeros" / "check.json").unlink()
    assert checks.sweep_outcome(tmp_path) == (0, "")


def test_the_check_table_at_80_columns_cuts_no_word():
    import io

    from rich.console import Console

    long = checks.Check("examples stay independent", "leak 0.43", "(data.center=true)", "note",
                        "a batch-independent norm (norm=gn or ln) with optim.base_batch=128 removes it")
    shown = Console(file=io.StringIO(), width=80, record=True)
    shown.print(checks.check_table([long]))
    text = shown.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "batch-independe" in text and "(data.center=t" in text  # folded, whole across its lines
