"""The gradient noise scale B_simple = tr(Σ)/|G|² against ground truth, and the critical batch a sweep fits."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config, scalars
from torch import nn
from torch.func import functional_call, grad, vmap

from diagnose.build import build_run
from diagnose.config import Thresholds, to_dict
from diagnose.diagnostics.noise_scale import measure, micro_batch_norms
from diagnose.findings import batch_vs_noise_scale
from diagnose.results import NoiseScale, RunMetrics
from diagnose.sweep.critical_batch import critical_batches, fit_critical_batch, steps_to_target
from diagnose.sweep.runs import RunRecord
from diagnose.training.loop import train


def half_squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(1) - y).square().mean()


def test_on_linear_regression_the_estimates_converge_to_the_analytic_noise_scale():
    # y = w*.x + eps, x ~ N(0, I_d), eps ~ N(0, s^2), at weights w = w* + delta: the per-example gradient
    # (delta.x - eps) x has mean G = delta and covariance (|delta|^2 + s^2) I + delta delta^T (Gaussian fourth
    # moments), so |G|^2 = |delta|^2 and tr(Σ) = d (|delta|^2 + s^2) + |delta|^2
    d, noise_std, generator = 20, 1.0, torch.Generator().manual_seed(0)
    w_true = torch.randn(d, generator=generator)
    delta = torch.randn(d, generator=generator)
    delta = delta / delta.norm()  # |delta| = 1
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_true + delta)
    grad_sq_true, trace_true = 1.0, d * (1.0 + noise_std ** 2) + 1.0  # B_simple = 41

    grad_sqs, traces = [], []
    for _ in range(400):
        x = torch.randn(64, d, generator=generator)
        y = x @ w_true + noise_std * torch.randn(64, generator=generator)
        grad_sq, trace = measure(model, half_squared_error, x, y, micro=8)
        grad_sqs.append(grad_sq.item())
        traces.append(trace.item())
    for estimates, truth in ((grad_sqs, grad_sq_true), (traces, trace_true)):
        mean = sum(estimates) / len(estimates)
        standard_error = torch.tensor(estimates).std().item() / math.sqrt(len(estimates))
        assert abs(mean - truth) < 4 * standard_error, (mean, truth, standard_error)  # unbiased
    b_simple = (sum(traces) / len(traces)) / (sum(grad_sqs) / len(grad_sqs))
    assert b_simple == pytest.approx(trace_true / grad_sq_true, rel=0.1)  # 41 within 10 %: stated tolerance


def test_on_a_small_net_the_micro_batch_trace_matches_per_example_gradients_from_torch_func():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
    x, y = torch.randn(128, 10), torch.randint(0, 4, (128,))
    loss_fn = nn.functional.cross_entropy
    params = {name: p.detach() for name, p in model.named_parameters()}

    def example_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (xi[None],)), yi[None])

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.reshape(128, -1) for g in per_example.values()], dim=1)
    trace_exact = flat.var(dim=0, correction=1).sum().item()  # the batch's per-example covariance, unbiased
    full_sq_exact = flat.mean(dim=0).square().sum().item()

    # over random partitions of this one batch into 8 micro-batches, the estimator's mean is exactly that trace
    traces = []
    for seed in range(200):
        order = torch.randperm(128, generator=torch.Generator().manual_seed(seed))
        small_sq, big_sq, b, big = micro_batch_norms(model, loss_fn, x[order], y[order], micro=8)
        assert big_sq.item() == pytest.approx(full_sq_exact, rel=1e-4)  # their mean is the batch's gradient
        traces.append(((small_sq - big_sq) / (1 / b - 1 / big)).item())
    mean = sum(traces) / len(traces)
    standard_error = torch.tensor(traces).std().item() / math.sqrt(len(traces))
    assert abs(mean - trace_exact) < 4 * standard_error and mean == pytest.approx(trace_exact, rel=0.05)


def test_measuring_leaves_training_exactly_as_it_was(tmp_path):
    # BN's running statistics and dropout's random stream: both would change training if measuring touched them
    common = [*TINY, "steps=6", "model.dropout=0.3", "diag.every=0", "diag.probe_every=0"]
    plain = build_run(compose_config([*common, "diag.noise_every=0"]))  # seeds the global stream: build, then train
    train(plain, tmp_path / "plain", {})
    measured = build_run(compose_config([*common, "diag.noise_every=1", "diag.noise_batch=32", "diag.noise_micro=4"]))
    # noise_every=1 in a 6-step run: measured before every step
    metrics = train(measured, tmp_path / "measured", {})
    for a, b in zip(plain.model.state_dict().values(), measured.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert metrics.noise is not None and [step for step, *_ in metrics.noise.history] == [1, 2, 3, 4, 5, 6]


def test_a_run_logs_the_noise_scale_and_keeps_it_in_metrics_json(tmp_path):
    cfg = compose_config([*TINY, "steps=8", "diag.noise_every=4", "diag.noise_batch=64", "diag.noise_micro=8"])
    metrics = train(build_run(cfg), tmp_path, to_dict(cfg))
    logged = scalars(tmp_path)
    assert {"noise/b_simple", "noise/b_simple_low", "noise/grad_sq", "noise/trace_cov", "noise/batch"} <= set(logged)
    assert [step for step, _ in logged["noise/grad_sq"]] == [2, 4, 6, 8]  # a short run: every steps // 3 at most
    saved = RunMetrics.from_json(json.loads((tmp_path / "metrics.json").read_text()))
    noise = saved.noise
    assert noise.micro_batch == 64 // 8 and [step for step, *_ in noise.history] == [2, 4, 6, 8]
    assert noise.grad_sq == metrics.noise.grad_sq and noise.trace_cov == metrics.noise.trace_cov
    if math.isfinite(noise.b_simple):  # resolved: the ratio of the averages
        assert noise.b_simple == pytest.approx(noise.trace_cov / noise.grad_sq, rel=1e-5)
    assert noise.b_simple_low <= noise.trace_cov / noise.grad_sq or noise.grad_sq <= 0

    assert saved.train_curve == metrics.train_curve and saved.train_curve[-1][0] == 8


def test_b_simple_is_given_once_the_averaged_grad_sq_stands_out_of_its_noise(monkeypatch):
    from diagnose.diagnostics import noise_scale
    from diagnose.diagnostics.monitor import Readings

    def estimates(grad_sqs: list[float]) -> list[dict[str, float]]:
        values = iter(grad_sqs)
        monkeypatch.setattr(noise_scale, "measure", lambda *args: (torch.tensor(next(values)), torch.tensor(100.0)))
        instrument = noise_scale.GradientNoise(nn.Linear(1, 1), None, lambda step: (torch.zeros(8, 1), None),
                                               every=1, micro=4, decay=0.8, batch=16, last=len(grad_sqs))
        seen = []
        for step in range(1, len(grad_sqs) + 1):
            readings = Readings()
            instrument.before_step(step, None, None, readings)
            seen.append({key: float(value) for key, value in readings.scalars.items()})
        return seen

    steady = estimates([1.0, 1.1, 0.9, 1.05, 0.95])
    assert math.isnan(steady[0]["noise/b_simple"])  # one measurement: no error estimate yet
    assert steady[-1]["noise/b_simple"] == pytest.approx(100.0 / steady[-1]["noise/grad_sq"])
    assert 50 < steady[-1]["noise/b_simple_low"] < steady[-1]["noise/b_simple"]
    noisy = estimates([3.0, -2.5, 2.0, -1.5, 1.0])  # |G|² within its noise: only a lower bound
    assert math.isnan(noisy[-1]["noise/b_simple"]) and 0 < noisy[-1]["noise/b_simple_low"] < 100
    drifting = estimates([2.0, 1.6, 1.3, 1.0, 0.8])  # training shrinks |G|²: a drift, not noise
    assert math.isfinite(drifting[-1]["noise/b_simple"])


def test_noise_batch_must_hold_two_examples_per_micro_batch():
    from diagnose.errors import UserError

    with pytest.raises(UserError, match="diag.noise_batch must hold at least 2 examples per micro-batch"):
        compose_config([*TINY, "diag.noise_batch=10", "diag.noise_micro=8"])


def noisy_run(batch: int, b_simple: float, status: str = "completed", low: float | None = None) -> RunMetrics:
    noise = NoiseScale(b_simple=b_simple, b_simple_low=b_simple / 2 if low is None else low, grad_sq=1.0,
                       trace_cov=b_simple, batch=batch, micro_batch=32, history=[(100, b_simple, b_simple / 2)])
    return RunMetrics(status=status, steps=100, noise=noise)


def test_the_finding_places_the_batch_against_the_noise_scale():
    t = Thresholds()
    (below,) = batch_vs_noise_scale(noisy_run(16, 900.0), t)
    assert "batch 16 is far below the gradient noise scale B_simple ~900" in below.message
    assert "fewer steps" in below.remedy
    (above,) = batch_vs_noise_scale(noisy_run(4096, 40.0), t)
    assert "batch 4096 is far above" in above.message and "most of each batch is wasted" in above.message
    assert batch_vs_noise_scale(noisy_run(128, 300.0), t) == []  # within 10x either way: nothing to say
    (bound,) = batch_vs_noise_scale(noisy_run(16, math.nan, low=500.0), t)  # |G|² not resolved: the lower bound
    assert "B_simple at least ~500 (|G|² is still within its noise)" in bound.message
    assert batch_vs_noise_scale(noisy_run(4096, math.nan, low=40.0), t) == []  # a lower bound cannot say "above"
    assert batch_vs_noise_scale(noisy_run(16, math.nan, low=math.nan), t) == []
    assert batch_vs_noise_scale(noisy_run(16, 900.0, "diverged"), t) == []


def test_steps_to_target_interpolates_between_logged_points():
    curve = [(10, 2.0), (20, 1.0), (30, 0.5)]
    assert steps_to_target(curve, 0.75) == pytest.approx(25.0)
    assert steps_to_target(curve, 2.5) == 10.0
    assert steps_to_target(curve, 0.1) is None


def test_the_fit_recovers_a_planted_critical_batch():
    s_min, e_min = 200.0, 200.0 * 300  # B_crit = 300
    batches = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    wobble = [1.04, 0.97, 1.02, 0.96, 1.05, 0.98, 1.03, 0.95, 1.01]  # +-5 % measurement noise
    fit = fit_critical_batch(batches, [(s_min + e_min / b) * w for b, w in zip(batches, wobble, strict=True)])
    assert fit is not None and fit.b_crit == pytest.approx(300, rel=0.15)
    flat = fit_critical_batch([8, 16, 32], [100.0, 100.0, 100.0])  # no trade-off in the range: B_crit ~ 0
    assert flat.b_crit < 1
    halving = fit_critical_batch([16, 32, 64, 128], [800.0, 400.0, 200.0 * 1.03, 100.0])  # B_crit far above
    assert halving.s_min <= 0 or halving.b_crit > 1000


def test_a_sweep_finds_the_critical_batch_of_runs_whose_steps_follow_the_model(tmp_path):
    # each run's loss falls as exp(-step / tau) with tau = S(B) / ln 2 for S(B) = S_min + E_min / B, so it reaches
    # half its start at S(B) steps: the sweep's target is the loosest run's best loss, and the fit must give B_crit
    s_min, b_crit = 50.0, 256.0
    runs = []
    for batch in (16, 32, 64, 128, 256, 512, 1024):
        steps_needed = s_min * (1 + b_crit / batch)
        curve = [(step, math.exp(-math.log(2) * step / steps_needed)) for step in range(5, 2000, 5)]
        metrics = RunMetrics(status="completed", train_curve=curve)
        metrics.noise = NoiseScale(b_simple=200.0, b_simple_low=150.0, grad_sq=1.0, trace_cov=200.0, batch=batch,
                                   micro_batch=32,
                                   history=[(1, 100.0, 50.0), (int(steps_needed), 200.0, 150.0)])
        runs.append(RunRecord(Path(tmp_path / f"batch={batch}"), {"batch": batch}, metrics))
    (series,) = critical_batches(runs, ["batch"])
    assert series.fit is not None and series.fit.b_crit == pytest.approx(b_crit, rel=0.1)
    assert series.b_simple_median == 200.0  # B_simple read where each run reached the target
