"""Per-layer diagnostics, each checked against an independent computation."""

import gc
import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_DATA, compose_config, plain, scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import build_model, build_run
from diagnose.components.activations import ACTIVATIONS, SATURATING
from diagnose.components.norms import NORMS
from diagnose.config import DiagConfig, to_dict
from diagnose.diagnostics.batchnorm import BatchNormStats
from diagnose.diagnostics.dead_units import DeadUnits
from diagnose.diagnostics.depth import DepthFigure
from diagnose.diagnostics.landscape import landscape
from diagnose.diagnostics.layer_stats import ActivationStats, Schedule, WeightStats
from diagnose.diagnostics.layers import measured_layers
from diagnose.diagnostics.metrics import LAYER_METRICS, Seen
from diagnose.diagnostics.monitor import Monitor
from diagnose.diagnostics.stats import ZERO_BLOCK, histograms, mean_std, norm_from, sign_agreement, zero_fraction
from diagnose.models.modes import batch_statistics
from diagnose.training.batches import epoch_batches, training_batch
from diagnose.training.loop import train, train_step

EVERY_STEP = Schedule(every=1, hist_every=1, last=1)
SETTINGS = DiagConfig()


class RecordingWriter:
    """Stands in for SummaryWriter: keeps the last value written under each tag."""

    def __init__(self):
        self.scalars: dict[str, float] = {}
        self.histograms: dict[str, tuple] = {}

    @property
    def file_writer(self):
        return self

    def add_summary(self, summary, step):  # many values in one event, as writing.write_scalars/_histograms send them
        for value in summary.value:
            if value.HasField("histo"):
                self.histograms[plain(value.tag)] = value.histo
            else:
                self.scalars[plain(value.tag)] = value.simple_value


def model_for(*overrides, shape=(1, 8, 8), n_classes=4):
    torch.manual_seed(0)
    config = compose_config(list(overrides))
    model = build_model(config, shape, n_classes)
    model.measured = measured_layers(model, ACTIVATIONS[config.act.name], NORMS[config.norm.name])
    return model


def monitor_for(model, writer, schedule=EVERY_STEP) -> Monitor:
    """The per-layer instruments of a training run, assembled by hand around a bare model."""
    layers = model.measured
    return Monitor(layers, [ActivationStats(layers, schedule, SETTINGS), BatchNormStats(layers, schedule),
                            WeightStats(layers, schedule, SETTINGS)], writer)


def one_measured_step(model, x, y, lr=0.1):
    """Train one step with diagnostics on; returns (writer, p.grad norms, weights before, after)."""
    writer = RecordingWriter()
    monitor = monitor_for(model, writer)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    monitor.before_step(1, x)
    F.cross_entropy(model(x), y).backward()
    monitor.after_backward(1)
    grad_norms = {name: p.grad.norm().item() for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    nonfinite = monitor.after_step(1)
    return writer, grad_norms, before, nonfinite


def test_weight_gradient_norm_and_update_ratio_match_the_parameters():
    model = model_for("model.widths=[4,8]")
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    writer, grad_norms, before, _ = one_measured_step(model, x, y)
    for layer in ("features.0.conv", "features.2.conv", "head.fc"):
        weight = dict(model.named_parameters())[f"{layer}.weight"]
        assert writer.scalars[f"weight_grad_norm/{layer}"] == pytest.approx(grad_norms[f"{layer}.weight"], rel=1e-5)
        expected_ratio = ((weight - before[f"{layer}.weight"]).norm() / before[f"{layer}.weight"].norm()).item()
        assert writer.scalars[f"update_ratio/{layer}"] == pytest.approx(expected_ratio, rel=1e-4)
        assert writer.scalars[f"weight_norm/{layer}"] == pytest.approx(before[f"{layer}.weight"].norm().item(),
                                                                       rel=1e-5)
    assert writer.scalars["reference/update_ratio"] == pytest.approx(1e-3)  # the line drawn beside the ratios


def test_activation_and_output_gradient_statistics_match_a_manual_forward():
    model = model_for("model=mlp", "model.depth=2", "model.width=32", "norm=none")
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    # the manual forward: every intermediate kept, its gradient retained
    h0 = model.features[0].linear(x.flatten(1))
    a0 = model.features[0].act(h0)
    h1 = model.features[1].linear(a0)
    for t in (h0, a0, h1):
        t.retain_grad()
    F.cross_entropy(model.head(model.features[1].act(h1)), y).backward()
    manual = {"features.0.linear": h0, "features.0.act": a0, "features.1.linear": h1}
    grads = {name: t.grad.clone() for name, t in manual.items()}
    model.zero_grad()

    writer, *_ = one_measured_step(model, x, y)
    for name, t in manual.items():
        if name.endswith(".act"):  # the mean and the exact zeros are charted for activations
            assert writer.scalars[f"act_mean/{name}"] == pytest.approx(t.mean().item(), abs=1e-5)
            assert writer.scalars[f"act_zero/{name}"] == pytest.approx((t == 0).float().mean().item())
        assert writer.scalars[f"act_std/{name}"] == pytest.approx(t.std(correction=0).item(), rel=1e-4)
        assert writer.scalars[f"grad_norm/{name}"] == pytest.approx(grads[name].norm().item(), rel=1e-4)
        assert writer.scalars[f"grad_std/{name}"] == pytest.approx(grads[name].std(correction=0).item(), rel=1e-3)
    assert 0.3 < writer.scalars["act_zero/features.0.act"] < 0.7  # a ReLU zeroes about half
    for name, t in manual.items():  # small tensors: the histogram holds every entry
        histogram = writer.histograms[f"act/{name}"]
        assert (histogram.num, sum(histogram.bucket)) == (t.numel(), t.numel())
        assert (histogram.min, histogram.sum) == pytest.approx((t.min().item(), t.sum().item()), abs=1e-4)
        assert histogram.bucket_limit[-1] == pytest.approx(t.max().item())


@pytest.mark.parametrize(("bias", "dead"), [(-1e3, 1.0), (1e3, 0.0)])
def test_a_very_negative_bias_kills_every_relu_unit_a_large_positive_one_none(bias, dead):
    model = model_for("model=mlp", "model.depth=2", "model.width=16", "norm=none", "act=relu")
    with torch.no_grad():
        model.features[0].linear.bias.fill_(bias)
    probe = DeadUnits(model, model.measured, torch.randn(512, 1, 8, 8), every=1)
    values = {tag: v.item() for tag, v in probe.measure(step=10).items()}
    assert values["dead/features.0.act"] == dead
    assert values["dead_permanent/features.0.act"] == dead


def test_the_probe_stops_early_only_when_no_unit_can_be_dead_any_more():
    """A unit that fires only on the probe's last example is alive; a probe where every unit fired on the first chunk
    needs no other chunk."""
    model = model_for("model=mlp", "model.depth=1", "model.width=4", "norm=none")
    linear = model.features[0].linear
    with torch.no_grad():  # unit u's pre-activation is the input's entry u, 0 elsewhere
        linear.weight.zero_()
        linear.weight[:, :4] = torch.eye(4)
        linear.bias.zero_()
    x = -torch.ones(512, 1, 8, 8)
    x.view(512, -1)[-1, 0] = 1.0  # unit 0 fires on the last example only, the others never
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    dead = DeadUnits(model, model.measured, x, chunk=128).measure(step=1)["dead/features.0.act"].item()
    assert dead == 0.75 and len(forwards) == 4
    x.view(512, -1)[0, :4] = 1.0  # now every unit fires on the first example
    forwards.clear()
    assert DeadUnits(model, model.measured, x, chunk=128).measure(step=1)["dead/features.0.act"].item() == 0
    assert len(forwards) == 1


def test_dead_for_good_counts_units_dead_at_every_probe_since_they_died():
    model = model_for("model=mlp", "model.depth=1", "model.width=4", "norm=none")
    probe = DeadUnits(model, model.measured, torch.randn(64, 1, 8, 8), every=1, since=0)
    bias = model.features[0].linear.bias
    with torch.no_grad():
        bias.copy_(torch.tensor([-1e3, -1e3, 1e3, 1e3]))
        first = probe.measure(1)
        bias.copy_(torch.tensor([-1e3, 1e3, -1e3, 1e3]))  # unit 1 comes back, unit 2 dies
        second = probe.measure(2)
        bias.copy_(torch.tensor([-1e3, -1e3, 1e3, 1e3]))  # unit 1 dies again, unit 2 comes back
        third = probe.measure(3)
    assert [p["dead/features.0.act"].item() for p in (first, second, third)] == [0.5, 0.5, 0.5]
    # units 0 and 1 at first; then 0 (dead since step 1) and 2 (died at step 2, new deaths count); then 0 alone:
    # unit 1 came back once, unit 2 came back
    assert [p["dead_permanent/features.0.act"].item() for p in (first, second, third)] == [0.5, 0.5, 0.25]


@pytest.mark.parametrize("act", [name for name, entry in ACTIVATIONS.items() if entry.kind == SATURATING])
def test_a_squashing_layer_fed_large_inputs_is_saturated(act):
    model = model_for("model=mlp", "model.depth=1", "model.width=64", "norm=none", f"act={act}",
                      "init=normal", "init.std=1.0")
    y = torch.randint(0, 4, (32,))
    writer, *_ = one_measured_step(model, 100 * torch.randn(32, 1, 8, 8), y)
    assert writer.scalars["saturation/features.0.act"] > 0.95
    quiet = model_for("model=mlp", "model.depth=1", "model.width=64", "norm=none", f"act={act}",
                      "init=normal", "init.std=0.001")
    writer, *_ = one_measured_step(quiet, torch.randn(32, 1, 8, 8), y)
    assert writer.scalars["saturation/features.0.act"] == 0.0


def test_batchnorm_shift_equals_the_batch_statistics_of_its_input():
    model = model_for("model=mlp", "model.depth=1", "model.width=8", "norm=bn")
    bn = model.features[0].norm
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(2.0)
    x = torch.randn(32, 1, 8, 8)
    h = model.features[0].linear(x.flatten(1)).detach()
    expected_shift = ((h.mean(0) - 0.5).abs() / (2.0 + bn.eps) ** 0.5).mean().item()
    expected_ratio = ((h.var(0, correction=0) + bn.eps) / (2.0 + bn.eps)).mean().item()
    writer, *_ = one_measured_step(model, x, torch.randint(0, 4, (32,)))
    assert writer.scalars["bn_shift/features.0.norm"] == pytest.approx(expected_shift, rel=1e-4)
    assert writer.scalars["bn_var_ratio/features.0.norm"] == pytest.approx(expected_ratio, rel=1e-4)


def test_batch_statistics_mode_leaves_running_statistics_untouched():
    model = model_for("norm=bn", "model.widths=[4]")
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with batch_statistics(model):
        assert model.features[0].norm.training and not model.training
        model(torch.randn(8, 1, 8, 8) * 5 + 3)
    assert not model.training and not model.features[0].norm.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_sign_agreement_counts_per_unit_not_over_the_tensor():
    grad = torch.tensor([[1.0, 2.0, 3.0, 0.0],     # one unit, all positive: 1
                         [-1.0, -2.0, -3.0, -4.0],  # all negative: 1 (a whole-tensor average would cancel it)
                         [1.0, -1.0, 1.0, -1.0],    # balanced: 0
                         [0.0, 0.0, 0.0, 0.0]])     # no gradient: left out
    assert sign_agreement(grad).item() == pytest.approx(2 / 3)
    conv_grad = torch.ones(2, 3, 3, 3)
    conv_grad[1] *= -1
    assert sign_agreement(conv_grad).item() == 1.0


def zigzag(tmp_path: Path, batch: int, center: bool) -> dict[str, float]:
    """Mean sign agreement per layer over 20 steps of a sigmoid MLP on synthetic images (pixels >= 0)."""
    out = tmp_path / f"{batch}-{center}"
    cfg = compose_config(TINY_DATA + ["model=mlp", "model.depth=2", "model.width=32", "act=sigmoid", "norm=none",
                                      f"batch={batch}", f"data.center={str(center).lower()}", "steps=20",
                                      "diag.every=1", "optim.momentum=0.0"])
    train(build_run(cfg), out, {})
    values = scalars(out)
    return {layer: sum(v for _, v in values[f"sign_agreement/{layer}"]) / 20
            for layer in ("features.0.linear", "features.1.linear")}


def test_non_centred_inputs_make_weight_gradients_agree_in_sign(tmp_path):
    at_one = zigzag(tmp_path, batch=1, center=False)
    # one example with pixels >= 0: every weight of a unit gets the sign of that unit's error signal ...
    assert at_one["features.0.linear"] == pytest.approx(1.0)
    # ... and the same holds after a sigmoid, whose outputs are all positive
    assert at_one["features.1.linear"] == pytest.approx(1.0)
    raw, centred = zigzag(tmp_path, batch=32, center=False), zigzag(tmp_path, batch=32, center=True)
    assert raw["features.0.linear"] > centred["features.0.linear"] + 0.1
    assert raw["features.1.linear"] > 0.5


@pytest.mark.parametrize("spread", [3.0, 0.25, 0.2, 0.1, 1e-2, 1e-4])  # 2 std / mean: the shortcut's edge is ~0.2
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "features", "one example"])
def test_mean_std_and_norm_match_torch_even_where_the_mean_dwarfs_the_spread(spread, layout):
    """The one-read sums and the centred pass they fall back to agree with float64 on every layout a hook sees;
    1e-4 is a saturated sigmoid (outputs near 0.5)."""
    torch.manual_seed(0)
    x = 0.5 + 0.5 * spread * torch.randn(64, 32, 9, 9)
    x = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
         "sliced": x[:, ::2], "features": x.flatten(1), "one example": x[:1]}[layout]
    mean, std = mean_std(x)
    ref_std, ref_mean = torch.std_mean(x.double(), correction=0)
    assert mean.item() == pytest.approx(ref_mean.item(), rel=1e-6)
    assert std.item() == pytest.approx(ref_std.item(), rel=1e-4)
    assert norm_from(mean, std, x.numel()).item() == pytest.approx(x.double().norm().item(), rel=1e-6)


def test_mean_std_is_exact_for_a_layer_collapsed_to_a_constant():
    mean, std = mean_std(torch.full((128, 64, 4, 4), 0.3).contiguous(memory_format=torch.channels_last))
    assert std.item() < 1e-6 and mean.item() == pytest.approx(0.3)  # float32's rounding of the mean, no more


def test_mean_std_reports_a_non_finite_entry_through_the_mean():
    assert not math.isfinite(mean_std(torch.tensor([1.0, float("inf"), 2.0]))[0].item())


def test_mean_std_of_entries_whose_squares_overflow_float32_and_of_an_empty_tensor():
    torch.manual_seed(0)
    x = 3e19 * (1 + 1e-3 * torch.randn(64, 64))
    ref_std, ref_mean = torch.std_mean(x.double(), correction=0)
    assert mean_std(x)[1].item() == pytest.approx(ref_std.item(), rel=1e-3)
    assert all(math.isnan(v.item()) for v in mean_std(torch.empty(0, 5)))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_zero_fraction_counted_block_by_block_is_the_exact_share_of_zeros(layout):
    """A map larger than a block (a conv map's) is counted a block at a time: the share of entries equal to 0, and
    to the last bit the number the one-shot count over the whole tensor gives."""
    torch.manual_seed(0)
    x = torch.randn(8, 16, 60, 60).relu()  # 460,800 entries, about half of them 0: two blocks
    x = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last), "sliced": x[:, ::2]}[layout]
    assert x.numel() > ZERO_BLOCK or layout == "sliced"
    assert zero_fraction(x).item() == pytest.approx((x == 0).double().mean().item(), abs=1e-7)
    assert zero_fraction(x).item() == (1 - x.sign().abs().sum(dtype=torch.float32) / x.numel()).item()


def test_a_nan_entry_is_not_counted_as_an_exact_zero():
    """torch.sign(NaN) is 0: the fast count would take the NaNs of a diverging step's output for zeros."""
    (act_zero,) = [metric for metric in LAYER_METRICS if metric.name == "act_zero"]
    for size in (100, 2 * ZERO_BLOCK):  # counted at once, and block by block
        x = torch.zeros(size)
        x[:10], x[10:20] = float("nan"), 1.0
        assert act_zero.compute(Seen(x, None, None)).item() == pytest.approx((size - 20) / size)
        x[:10] = 0.0
        assert act_zero.compute(Seen(x, None, None)).item() == pytest.approx((size - 10) / size)


@pytest.mark.parametrize("entry, blew_up", [(float("nan"), True), (float("inf"), True), (3e38, False)])
def test_a_weight_gradient_is_non_finite_exactly_when_an_entry_is(entry, blew_up):
    """Huge but finite entries (whose sum or squared norm would overflow) are not a divergence."""
    model = model_for("model=mlp", "model.depth=2", "model.width=8", "norm=none")
    weight = model.features[1].linear.weight
    weight.register_hook(lambda grad: torch.full_like(grad, entry))  # every activation stays finite
    *_, nonfinite = one_measured_step(model, torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,)), lr=0.0)
    if blew_up:
        assert (nonfinite.layer, nonfinite.tensor) == ("features.1.linear", "weight gradient")
    else:
        assert nonfinite is None


def test_histograms_match_torch_histc_and_skip_non_finite_values():
    x = torch.randn(1000)
    y = torch.tensor([1.0, 2.0, float("inf"), float("nan"), 3.0])
    result = histograms([x, y], bins=10)
    assert result[0, 5:].tolist() == torch.histc(x, bins=10, min=x.min().item(), max=x.max().item()).tolist()
    assert result[1, :5].tolist() == [1.0, 3.0, 3.0, 6.0, 14.0]  # min, max, count, sum, sum of squares
    assert result[1, 5:].sum().item() == 3


def test_a_non_finite_activation_is_reported_with_its_layer():
    model = model_for("model=mlp", "model.depth=3", "model.width=8", "norm=none")
    with torch.no_grad():
        model.features[1].linear.weight[0, 0] = float("inf")
    *_, nonfinite = one_measured_step(model, torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,)))
    assert (nonfinite.layer, nonfinite.tensor, nonfinite.step) == ("features.1.linear", "activation", 1)


def test_a_diverging_run_names_the_first_non_finite_step_and_layer(tmp_path):
    cfg = compose_config(TINY + ["lr=1e12", "norm=none", "steps=20", "optim.momentum=0.0", "log_every=5"])
    run = build_run(cfg)
    metrics = train(run, tmp_path, to_dict(cfg))
    assert metrics.status == "diverged"
    found = metrics.nonfinite
    assert found.layer.startswith(("features.", "head.")) and found.tensor in ("activation", "gradient")
    # Independently: the same run, step by step with a check after each, goes non-finite at that step
    losses = per_step_losses(cfg, steps=found.step)
    assert all(math.isfinite(v) for v in losses[:-1]) and not math.isfinite(losses[-1]), losses
    # on the CPU each step's loss is checked: the run stops at the first NaN loss, which is the step where a
    # layer went non-finite or the next one (a gradient that overflows poisons the weights for the next step)
    assert metrics.steps - found.step in (0, 1)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] < found.step  # last finite state
    assert json.loads((tmp_path / "metrics.json").read_text())["nonfinite"] == asdict(found)
    events = EventAccumulator(str(tmp_path)).Reload()
    assert "diverged/text_summary" in events.Tags()["tensors"]


def per_step_losses(cfg, steps: int) -> list[float]:
    """Each step's loss, NaN once anything is non-finite after the step; no diagnostics attached."""
    run = build_run(cfg)
    out = []
    for step in range(steps):
        if step % run.steps_per_epoch == 0:
            batches = epoch_batches(run, step // run.steps_per_epoch)
        x, y = training_batch(run, next(batches), torch.Generator().manual_seed(run.seed))
        loss, _ = train_step(run, x, y)
        finite = all(torch.isfinite(p).all() for p in run.model.parameters())
        out.append(loss.item() if finite else float("nan"))
    return out


def test_hooks_are_gone_after_a_run(cfg_factory, tmp_path):
    run = build_run(cfg_factory("diag=full", "steps=3"))
    train(run, tmp_path, {})
    for name, module in run.model.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, name


def rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow(seconds=6)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_no_memory_growth_over_300_logged_steps(tmp_path):
    model = model_for("model.widths=[16,32]", shape=(1, 16, 16))
    writer = SummaryWriter(str(tmp_path))
    monitor = monitor_for(model, writer, Schedule(every=1, hist_every=1, last=300))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 4, (64,))
    for step in range(1, 301):
        monitor.before_step(step, x)
        F.cross_entropy(model(x), y).backward()
        monitor.after_backward(step)
        optimizer.step()
        optimizer.zero_grad()
        monitor.after_step(step)
        if step == 100:
            writer.flush()
            gc.collect()
            at_100 = rss_mb()
    writer.flush()
    gc.collect()
    # one step's activations here are ~2 MB: keeping them would add hundreds of MB over 200 steps
    assert rss_mb() - at_100 < 20
    assert not monitor.readings and not monitor.instruments[-1]._before  # nothing kept between steps
    writer.close()


def test_a_depth_figure_leaves_nothing_for_the_cyclic_collector():
    """The run's one figure is redrawn, and what each draw leaves is freed as it is written (the youngest generation
    collected), not left for a full collection; the image reaches TensorBoard as a PNG of the figure's size."""
    model = model_for("model.widths=[4,8]")
    writer = RecordingWriter()
    images = []
    writer.add_summary = lambda summary, step: images.extend(value.image for value in summary.value)
    figure = DepthFigure(writer, model.measured, run_name="run", middle=None)
    figure.latest = figure.first = {f"{metric}/{layer.name}": 1.0 + depth for depth, layer in enumerate(model.measured)
                                    for metric in ("act_std", "grad_norm")}
    figure.draw(1)  # imports matplotlib, fills its caches
    drawn = figure._plot.figure
    gc.collect()
    before = len(gc.get_objects())
    for step in range(2, 7):
        figure.draw(step)
    assert len(gc.get_objects()) - before < 200  # a figure left to the collector holds ~10,000 objects
    assert figure._plot.figure is drawn  # one figure a run, redrawn
    assert len(images) == 6 and images[-1].encoded_image_string.startswith(b"\x89PNG")
    assert (images[-1].width, images[-1].height) == (990, 378)  # 11 x 4.2 inches at 90 dpi


def test_landscape_restores_weights_buffers_and_random_state_exactly():
    model = model_for("norm=bn", "model.widths=[4,8]", "model.dropout=0.5")
    model.train()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    values = landscape(model, F.cross_entropy, x, y, lr=0.1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.isfinite(v) and v >= 0 for v in values.values())


def test_landscape_beta_of_a_quadratic_is_its_curvature_along_the_gradient():
    # L(W) = 0.5 ||X W^T - T||^2 has a constant Hessian H, so grad L(w - eta g) - grad L(w) = -eta H g for
    # every eta: beta = ||H g|| / ||g|| and the gradient change grows linearly in eta
    torch.manual_seed(0)
    model = nn.Linear(5, 3, bias=False)
    x, target = torch.randn(20, 5), torch.randn(20, 3)

    def loss_fn(out, t):
        return 0.5 * ((out - t) ** 2).sum()

    (g,) = torch.autograd.grad(loss_fn(model(x), target), [model.weight])
    _, hg = torch.autograd.functional.hvp(lambda w: loss_fn(x @ w.T, target), model.weight.detach(), g)
    values = landscape(model, loss_fn, x, target, lr=0.01)
    assert values["landscape/beta"].item() == pytest.approx((hg.norm() / g.norm()).item(), rel=1e-4)
    # changes at eta = 0.5, 4 (x lr): range = 3.5 * lr * ||H g||
    assert values["landscape/grad_change_range"].item() == pytest.approx(3.5 * 0.01 * hg.norm().item(), rel=1e-4)
