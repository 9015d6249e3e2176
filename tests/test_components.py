"""Every component builds, and the ones with a textbook definition match an independent computation."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, TINY_DATA, compose_config, options_of
from torch import nn

from diagnose.build import build_loss, build_model
from diagnose.components.activations import ACTIVATIONS, _gaussian_second_moment
from diagnose.components.downsample import DOWNSAMPLES
from diagnose.components.inits import INITS
from diagnose.components.layers import BatchInstanceNorm, Maxout
from diagnose.components.loss_modules import Focal
from diagnose.components.losses import LOSSES
from diagnose.components.norms import NORMS
from diagnose.components.optim import (
    CLIPS,
    OPTIMIZERS,
    SCHEDULES,
    clamp_gates_after_each_step,
    param_groups,
    scaled_lr,
)
from diagnose.config import GROUPS, schema, schemas
from diagnose.errors import UserError
from diagnose.models import MODELS
from diagnose.models.cnn import build_cnn
from diagnose.models.layout import prefers_channels_last
from diagnose.registry import lookup

SHAPE = (3, 8, 8)  # (C, H, W) of one input


@pytest.mark.parametrize("group", sorted(schemas()))
def test_every_registry_key_has_a_config_file_and_back(group):
    assert sorted(schemas()[group]) == options_of(group)
    for option in options_of(group):  # each yaml file extends its own schema node
        assert f"/schema/{group}/{option}@_here_" in (CONF / group / f"{option}.yaml").read_text()


def test_lookup_error_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown act 'swish'. Valid options: .*gelu.*relu"):
        lookup(ACTIVATIONS, "swish", "act")


COMPONENT_OPTIONS = [(group, option) for group, table in (("act", ACTIVATIONS), ("init", INITS), ("norm", NORMS),
                                                           ("loss", LOSSES), ("downsample", DOWNSAMPLES))
                     for option in table]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("group", "option"), COMPONENT_OPTIONS, ids=[f"{g}={o}" for g, o in COMPONENT_OPTIONS])
def test_every_option_composes_builds_and_trains_one_step(model, group, option):
    shrink = {"cnn": ["model.widths=[8,16]"], "mlp": ["model.width=16", "model.depth=2"]}[model]  # a new model: add it
    cfg = compose_config([f"model={model}", f"{group}={option}", *shrink])
    net = build_model(cfg, SHAPE, n_classes=4)
    loss_fn = build_loss(cfg.loss, n_classes=4)
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 4, (6,))
    logits = net(x)
    assert logits.shape == (6, 4)
    loss = loss_fn(logits, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    weights = [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() > 1]
    assert all(p.grad is not None for p in weights)
    if option != "zeros":  # zero weights pass no gradient back to earlier layers: that is the point
        assert any(p.grad.abs().sum() > 0 for p in weights)


@pytest.mark.parametrize("option", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("clip", CLIPS)
def test_every_optimizer_schedule_and_clip_builds(option, schedule, clip, cfg_factory):
    from diagnose.build import build_run

    run = build_run(cfg_factory(f"optim={option}", f"schedule={schedule}", f"clip={clip}"))
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 16 / 128)
    assert (run.clip is None) == (clip == "none")


@pytest.mark.parametrize("overrides", [*([f"optim={o}"] for o in OPTIMIZERS),
                                       ["optim=sgd", "optim.nesterov=true", "norm=bin"]])
def test_fused_optimizers_on_the_cpu_follow_the_plain_update(overrides, cfg_factory):
    """The trainer builds torch's fused optimizers on the CPU (a speed-up, see OPTIMIZERS): the weights must
    follow the same trajectory as torch's default update would, BIN's gate group (10x lr, clamped) included."""
    from diagnose.build import build_run

    run = build_run(cfg_factory(*overrides))
    assert run.optimizer.defaults["fused"] is True
    options = {k: v for k, v in run.optimizer.defaults.items() if k in ("momentum", "nesterov", "betas")}
    reference_model = build_run(cfg_factory(*overrides)).model
    groups = param_groups(reference_model, run.lr, cfg_factory(*overrides).optim.weight_decay)  # as build_run does
    reference = type(run.optimizer)(groups, lr=run.lr, **options)
    clamp_gates_after_each_step(reference, reference_model)
    initial = [p.detach().clone() for p in run.model.parameters()]
    torch.manual_seed(0)
    x, y = torch.randn(16, *run.data.shape), torch.randint(0, run.data.n_classes, (16,))
    for model, optimizer in ((run.model, run.optimizer), (reference_model, reference)):
        for _ in range(5):
            optimizer.zero_grad()
            run.loss_fn(model(x), y).backward()
            optimizer.step()
    for fused, plain in zip(run.model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    assert any((p != q).any() for p, q in zip(run.model.parameters(), initial, strict=True))  # it did train


LAYOUT_OPTIONS = [*(("norm", o) for o in NORMS), *(("downsample", o) for o in DOWNSAMPLES), ("act", "maxout")]


@pytest.mark.parametrize(("group", "option"), LAYOUT_OPTIONS, ids=[f"{g}={o}" for g, o in LAYOUT_OPTIONS])
def test_a_channels_last_cnn_computes_what_the_nchw_one_does(group, option):
    """The trainer may run a CNN in channels_last (models/layout.py): logits and gradients must not change."""
    cfg = compose_config(["model=cnn", "model.widths=[8,16]", f"{group}={option}"])
    nchw = build_model(cfg, SHAPE, n_classes=4)
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    assert not nhwc.features[-1].conv.weight.is_contiguous()  # the copy really is in the other layout
    torch.manual_seed(0)
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 4, (6,))
    logits = []
    for net in (nchw, nhwc):
        logits.append(net(x))
        F.cross_entropy(logits[-1], y).backward()
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(nchw.named_parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(("overrides", "channels_last"), [
    ([], True), (["norm=gn"], True), (["norm=none", "downsample=strided"], True), (["precision=bf16"], True),
    (["norm=in"], False), (["norm=bin"], False), (["act=maxout"], False), (["model=mlp"], False),
])
def test_the_trainer_runs_a_cnn_channels_last_on_the_cpu_unless_a_layer_is_slower_in_it(overrides, channels_last):
    from diagnose.build import build_run

    run = build_run(compose_config([*TINY_DATA, *overrides]))
    assert prefers_channels_last(run.model, torch.device("cpu"), run.act, run.norm) == channels_last
    assert not prefers_channels_last(run.model, torch.device("cuda"), run.act, run.norm)  # unmeasured there: NCHW
    maps = [p for p in run.model.parameters() if p.dim() == 4]
    if channels_last:
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in maps)
        assert not all(p.is_contiguous() for p in maps)
    else:
        assert all(p.is_contiguous() for p in run.model.parameters())


def test_batch_instance_norm_with_rho_one_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    bin_, bn = BatchInstanceNorm(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for m in (bin_, bn):
            m.weight.uniform_(0.5, 2)
        bn.weight.copy_(bin_.weight)
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        bin_.bias.copy_(bn.bias)
    torch.testing.assert_close(bin_(x), bn(x))
    torch.testing.assert_close(bin_.running_mean, bn.running_mean)
    torch.testing.assert_close(bin_.running_var, bn.running_var)
    bin_.eval()
    bn.eval()
    torch.testing.assert_close(bin_(x), bn(x))


def test_batch_instance_norm_with_rho_zero_is_instance_norm_and_rho_stays_in_unit_interval():
    x = torch.randn(4, 3, 6, 6) * 2 + 5
    bin_ = BatchInstanceNorm(3)
    with torch.no_grad():
        bin_.rho.zero_()
    torch.testing.assert_close(bin_(x), F.instance_norm(x, eps=1e-5))
    model = nn.Sequential(bin_)
    optimizer = torch.optim.SGD(param_groups(model, lr=1.0, weight_decay=0.0), lr=1.0)
    clamp_gates_after_each_step(optimizer, model)
    bin_.rho.grad = torch.tensor([0.15, -0.03, -0.17])  # rho is 0; at 10x lr the step takes it to -1.5, 0.3, 1.7
    optimizer.step()
    assert bin_.rho.tolist() == pytest.approx([0.0, 0.3, 1.0])


def test_batch_instance_norm_gate_gets_ten_times_lr_and_no_weight_decay():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), BatchInstanceNorm(2))
    groups = param_groups(model, lr=0.1, weight_decay=5e-4)
    assert [len(g["params"]) for g in groups] == [4, 1]
    assert groups[1]["params"][0] is model[1].rho
    assert groups[1]["lr"] == pytest.approx(1.0) and groups[1]["weight_decay"] == 0


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, y = torch.randn(32, 5), torch.randint(0, 5, (32,))
    torch.testing.assert_close(Focal(gamma=0.0)(logits, y), F.cross_entropy(logits, y))
    # gamma > 0 down-weights easy examples, so the loss can only shrink
    assert Focal(gamma=2.0)(logits, y) < F.cross_entropy(logits, y)
    alpha = [0.1, 0.2, 0.3, 0.4, 0.5]
    torch.testing.assert_close(Focal(gamma=0.0, alpha=alpha)(logits, y),
                               F.cross_entropy(logits, y, reduction="none").mul(torch.tensor(alpha)[y]).mean())


def test_nll_and_kl_without_smoothing_equal_cross_entropy():
    logits, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    torch.testing.assert_close(LOSSES["nll"].make(weight=None)(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(LOSSES["kl"].make(label_smoothing=0.0)(logits, y), F.cross_entropy(logits, y))


def test_margin_loss_matches_a_loop_over_classes():
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    expected = sum(max(0.0, 1.0 - (logits[i, y[i]] - logits[i, j]).item())
                   for i in range(8) for j in range(5) if j != y[i]) / 8
    assert LOSSES["margin"].make(margin=1.0)(logits, y).item() == pytest.approx(expected, rel=1e-5)


def test_mse_compares_softmax_with_one_hot():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    expected = ((logits.softmax(1) - F.one_hot(y, 3)) ** 2).mean()
    torch.testing.assert_close(LOSSES["mse"].make()(logits, y), expected)


def test_kaiming_normal_gives_std_sqrt_two_over_fan_in():
    torch.manual_seed(0)
    layer = nn.Linear(500, 2000)
    INITS["kaiming_normal"].make(layer.weight, ACTIVATIONS["relu"].gain())
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.01)
    conv = nn.Conv2d(16, 256, 3)  # fan_in = 16 * 3 * 3
    INITS["kaiming_normal"].make(conv.weight, ACTIVATIONS["relu"].gain())
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.02)


def test_gains_follow_the_second_moment_rule():
    # the quadrature reproduces the closed forms calculate_gain knows ...
    assert 1 / math.sqrt(_gaussian_second_moment(F.relu)) == pytest.approx(math.sqrt(2), rel=1e-4)
    assert 1 / math.sqrt(_gaussian_second_moment(lambda z: z)) == pytest.approx(1.0, rel=1e-4)
    # ... max of two Gaussians has E[max^2] = 1 exactly, and a sampled estimate agrees for more pieces
    assert ACTIVATIONS["maxout"].gain(pieces=2) == pytest.approx(1.0, rel=1e-4)
    samples = torch.randn(400_000, 4, generator=torch.Generator().manual_seed(0)).amax(1)
    assert ACTIVATIONS["maxout"].gain(pieces=4) == pytest.approx(1 / samples.pow(2).mean().sqrt().item(), rel=0.01)
    z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    assert ACTIVATIONS["gelu"].gain() == pytest.approx(1 / F.gelu(z).pow(2).mean().sqrt().item(), rel=0.005)


def test_maxout_takes_the_max_over_consecutive_pieces_and_widens_the_layer_before():
    x = torch.randn(2, 6, 3, 3)
    expected = torch.maximum(torch.maximum(x[:, 0::3], x[:, 1::3]), x[:, 2::3])  # channel c: max of 3c..3c+2
    torch.testing.assert_close(Maxout(3)(x), expected)
    net = build_cnn(1, 8, 4, [5], 1, lambda: Maxout(3), None, DOWNSAMPLES["maxpool"])
    assert net.features[0].conv.out_channels == 15
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_group_norm_groups_must_divide_the_channels():
    with pytest.raises(UserError, match="norm.groups=5.*16 channels"):
        build_model(compose_config(["norm=gn", "norm.groups=5", "model.widths=[16]"]), SHAPE, 4)


def test_too_many_stages_for_the_image_size_is_a_clear_error():
    cfg = compose_config(["model.widths=[4,4,4,4,4]"])  # 8 -> 4 -> 2 -> 1 -> cannot halve
    with pytest.raises(UserError, match="5 stages.*1x1.*at most 4 stages"):
        build_model(cfg, SHAPE, 4)
    strided = compose_config(["model.widths=[4,4,4,4,4]", "downsample=strided"])
    with pytest.raises(UserError, match="at most 4 stages"):
        build_model(strided, SHAPE, 4)


def test_lr_scaling_rules():
    assert scaled_lr(0.1, 32, 128, "linear") == pytest.approx(0.025)
    assert scaled_lr(0.1, 32, 128, "sqrt") == pytest.approx(0.05)
    assert scaled_lr(0.1, 32, 128, "none") == pytest.approx(0.1)
    with pytest.raises(UserError, match="optim.lr_scaling"):
        scaled_lr(0.1, 32, 128, "cubic")


def test_schedules():
    cosine, step = SCHEDULES["cosine"].make(), SCHEDULES["step"].make(milestones=[0.5, 0.75], gamma=0.1)
    assert [cosine(p) for p in (0, 0.5, 1)] == pytest.approx([1, 0.5, 0])
    assert [step(p) for p in (0, 0.49, 0.5, 0.8)] == pytest.approx([1, 1, 0.1, 0.01])
    assert SCHEDULES["constant"].make()(0.7) == 1


def test_clipping_by_value_changes_direction_by_norm_keeps_it():
    def grads(clip):
        p = nn.Parameter(torch.zeros(2))
        p.grad = torch.tensor([3.0, 0.5])
        clip([p], max=1.0)
        return p.grad

    assert grads(CLIPS["value"].make).tolist() == [1.0, 0.5]
    by_norm = grads(CLIPS["norm"].make)
    assert by_norm.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert (by_norm / by_norm.norm()).tolist() == pytest.approx((torch.tensor([3.0, 0.5]) / 3.0414).tolist(), rel=1e-3)


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options_of(group)]


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_config_option_composes_into_its_schema(group, option):
    config = compose_config([f"{group}={option}"])  # checked against the schema, ranges included
    chosen = getattr(config, group)
    assert chosen.name == option and type(chosen) is schema(group, option)


def test_a_module_imported_later_stands_for_it_and_copies_as_a_proxy():
    """diagnose/lazy.py: the registries name torch through it, so that the schema is read without torch."""
    import copy
    import pickle

    from diagnose.lazy import later

    proxy = later("torch.nn")
    assert proxy.ReLU is nn.ReLU  # imported at the first attribute read
    for again in (copy.deepcopy(proxy), pickle.loads(pickle.dumps(proxy))):  # e.g. a registry entry copied
        assert again.Linear is nn.Linear
    with pytest.raises(AttributeError):
        proxy.NoSuchLayer  # noqa: B018 - the module's own error
