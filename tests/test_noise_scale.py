"""The gradient noise scale B_simple = tr(Σ)/|G|² against ground truth, and the critical batch a sweep fits."""

import json
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, compose_config, needs_fashion, scalars
from torch import nn
from torch.func import functional_call, grad, vmap

from diagnose.build import build_run
from diagnose.config import Thresholds, to_dict
from diagnose.diagnostics.noise_scale import PRECISE, GroupSums, measure, pair_mean_error
from diagnose.findings import batch_vs_noise_scale
from diagnose.results import NoiseScale, RunMetrics
from diagnose.sweep.critical_batch import critical_batches, fit_critical_batch, steps_to_target
from diagnose.sweep.runs import RunRecord
from diagnose.training.batches import noise_batches
from diagnose.training.loop import train
from diagnose.training.outputs import load_checkpoint


def half_squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(1) - y).square().mean()


def regression_at(distance: float, d: int = 20, noise_std: float = 1.0) -> tuple[nn.Module, Callable, float, float]:
    """y = w*.x + eps, x ~ N(0, I_d), eps ~ N(0, s^2), at weights w = w* + delta with |delta| = `distance`: the
    per-example gradient (delta.x - eps) x has mean G = delta and covariance (|delta|^2 + s^2) I + delta delta^T
    (Gaussian fourth moments), so |G|^2 = |delta|^2 and tr(Σ) = d (|delta|^2 + s^2) + |delta|^2. The model, a
    function drawing a batch of n, |G|² and tr(Σ)."""
    generator = torch.Generator().manual_seed(0)
    w_true, delta = torch.randn(d, generator=generator), torch.randn(d, generator=generator)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_true + distance * delta / delta.norm())

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, d, generator=generator)
        return x, x @ w_true + noise_std * torch.randn(n, generator=generator)

    return model, batch, distance ** 2, d * (distance ** 2 + noise_std ** 2) + distance ** 2


def test_on_linear_regression_the_estimates_and_their_errors_match_the_analytic_ones():
    model, batch, grad_sq_true, trace_true = regression_at(1.0)  # B_simple = 41
    estimates = [measure(model, half_squared_error, iter([batch(64)]), micro=16) for _ in range(400)]
    for values, errors, truth in (([e.grad_sq for e in estimates], [e.grad_sq_error for e in estimates], grad_sq_true),
                                  ([e.trace_cov for e in estimates], [e.trace_cov_error for e in estimates],
                                   trace_true)):
        mean, spread = torch.tensor(values).mean().item(), torch.tensor(values).std().item()
        assert abs(mean - truth) < 4 * spread / math.sqrt(len(values)), (mean, truth)  # unbiased
        stated = torch.tensor(errors).square().mean().sqrt().item()
        assert stated == pytest.approx(spread, rel=0.2), (stated, spread)  # each measurement knows its own error
    b_simple = sum(e.trace_cov for e in estimates) / sum(e.grad_sq for e in estimates)
    assert b_simple == pytest.approx(trace_true / grad_sq_true, rel=0.1)  # 41 within 10 %: stated tolerance


def test_the_error_of_a_mean_of_dot_products_is_hoeffdings_variance():
    # m vectors h ~ N(mu, C): the mean of h_a.h_c over distinct pairs has variance (4(m-2) ζ1 + 2 ζ2) / m(m-1), with
    # ζ1 = mu'C mu and ζ2 = tr(C²) + 2 mu'C mu; the estimate from one Gram matrix must average to it, and the spread
    # of the pair means over many draws must be it
    m, d, generator = 16, 30, torch.Generator().manual_seed(1)
    scales = torch.linspace(0.2, 2.0, d, dtype=torch.float64)  # C = diag(scales²)
    mu = 0.3 * torch.ones(d, dtype=torch.float64)
    zeta1 = (mu.square() * scales.square()).sum().item()
    zeta2 = scales.pow(4).sum().item() + 2 * zeta1
    variance = (4 * (m - 2) * zeta1 + 2 * zeta2) / (m * (m - 1))
    means, stated = [], []
    for _ in range(2000):
        h = mu + scales * torch.randn(m, d, generator=generator, dtype=torch.float64)
        gram = h @ h.T
        means.append(((gram.sum() - gram.diagonal().sum()) / (m * (m - 1))).item())
        stated.append(pair_mean_error(gram) ** 2)
    assert sum(means) / len(means) == pytest.approx(mu.square().sum().item(), abs=4 * math.sqrt(variance / 2000))
    assert torch.tensor(means).var().item() == pytest.approx(variance, rel=0.1)
    # unbiased but for estimates of ζ1 below zero, which count as zero: here they overstate it by ~6 %
    assert sum(stated) / len(stated) == pytest.approx(variance, rel=0.1)


def test_on_a_small_net_the_micro_batch_estimates_match_per_example_gradients_from_torch_func():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
    x, y = torch.randn(128, 10), torch.randint(0, 4, (128,))
    loss_fn = nn.functional.cross_entropy
    params = {name: p.detach() for name, p in model.named_parameters()}

    def example_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (xi[None],)), yi[None])

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.reshape(128, -1) for g in per_example.values()], dim=1).double()
    trace_exact = flat.var(dim=0, correction=1).sum().item()  # the batch's per-example covariance, unbiased
    # the mean dot product of two distinct examples' gradients
    grad_sq_exact = ((flat.sum(0).square().sum() - flat.square().sum()) / (128 * 127)).item()

    # over random partitions of this one batch into 8 micro-batches, the estimators' means are exactly those
    grad_sqs, traces = [], []
    for seed in range(200):
        order = torch.randperm(128, generator=torch.Generator().manual_seed(seed))
        sums = GroupSums(8)
        sums.add(model, loss_fn, x[order], y[order], micro=8)
        assert sums.sums is not None and sums.counts.tolist() == [1.0] * 8
        assert torch.allclose(sums.sums.sum(0).double() / 8, flat.mean(0), atol=1e-6)  # the batch's gradient
        estimate = sums.estimate()
        grad_sqs.append(estimate.grad_sq)
        traces.append(estimate.trace_cov)
    for values, exact in ((grad_sqs, grad_sq_exact), (traces, trace_exact)):
        mean = sum(values) / len(values)
        standard_error = torch.tensor(values).std().item() / math.sqrt(len(values))
        assert abs(mean - exact) < 4 * standard_error, (mean, exact, standard_error)
    assert sum(traces) / len(traces) == pytest.approx(trace_exact, rel=0.05)


def test_a_measurement_draws_until_grad_sq_is_resolved_and_else_gives_only_the_lower_bound():
    model, batch, grad_sq_true, trace_true = regression_at(0.3)  # B_simple = 21.89 / 0.09 ~ 243
    batches = [batch(128) for _ in range(64)]
    resolved = measure(model, half_squared_error, iter(batches), micro=64, most=64)
    drawn = resolved.examples // 128
    assert resolved.grad_sq >= PRECISE * resolved.grad_sq_error and 1 < drawn < 64  # stopped once resolved
    one_fewer = GroupSums(64)
    for x, y in batches[:drawn - 1]:
        one_fewer.add(model, half_squared_error, x, y, micro=64)
    before = one_fewer.estimate()
    assert before.grad_sq < PRECISE * before.grad_sq_error  # and not before
    assert resolved.b_simple == pytest.approx(resolved.trace_cov / resolved.grad_sq)
    assert abs(resolved.b_simple - trace_true / grad_sq_true) < 3 * resolved.b_simple_error
    assert resolved.b_simple_low < resolved.b_simple

    model, batch, grad_sq_true, trace_true = regression_at(0.01)  # B_simple ~ 200,000: |G|² lost in its noise
    capped = measure(model, half_squared_error, iter([batch(128) for _ in range(4)]), micro=64, most=4)
    assert capped.examples == 4 * 128 and math.isnan(capped.b_simple) and math.isnan(capped.b_simple_error)
    assert 0 < capped.b_simple_low < trace_true / grad_sq_true  # a bound, and a true one


def test_measuring_leaves_training_exactly_as_it_was(tmp_path):
    # BN's running statistics and dropout's random stream: both would change training if measuring touched them
    common = [*TINY, "steps=6", "model.dropout=0.3", "diag.every=0", "diag.probe_every=0"]
    plain = build_run(compose_config([*common, "diag.noise_every=0"]))  # seeds the global stream: build, then train
    train(plain, tmp_path / "plain", {})
    measured = build_run(compose_config([*common, "diag.noise_every=1", "diag.noise_batch=32", "diag.noise_micro=16",
                                         "diag.noise_max_batch=96"]))
    # noise_every=1 in a 6-step run: measured before every step
    metrics = train(measured, tmp_path / "measured", {})
    for a, b in zip(plain.model.state_dict().values(), measured.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert metrics.noise is not None and [step for step, *_ in metrics.noise.history] == [1, 2, 3, 4, 5, 6]


SMALL = [*TINY, "diag.noise_batch=64", "diag.noise_micro=16", "diag.noise_max_batch=256"]


def test_a_run_logs_the_noise_scale_and_keeps_it_in_metrics_json(tmp_path):
    cfg = compose_config([*SMALL, "steps=8", "diag.noise_every=4"])
    metrics = train(build_run(cfg), tmp_path, to_dict(cfg))
    logged = scalars(tmp_path)
    assert {"noise/b_simple", "noise/b_simple_error", "noise/b_simple_low", "noise/grad_sq", "noise/trace_cov",
            "noise/examples", "noise/batch"} <= set(logged)
    assert [step for step, _ in logged["noise/grad_sq"]] == [2, 4, 6, 8]  # a short run: every steps // 3 at most
    assert all(value in (64, 128, 192, 256) for _, value in logged["noise/examples"])  # whole batches, to the cap
    saved = RunMetrics.from_json(json.loads((tmp_path / "metrics.json").read_text()))
    noise = saved.noise
    assert noise.micro_batch == 64 // 16 and [step for step, *_ in noise.history] == [2, 4, 6, 8]
    assert noise.grad_sq == metrics.noise.grad_sq and noise.trace_cov == metrics.noise.trace_cov
    assert noise.examples == logged["noise/examples"][-1][1] and noise.grad_sq_error > 0
    if math.isfinite(noise.b_simple):  # resolved: the ratio, at the last step's weights
        assert noise.b_simple == pytest.approx(noise.trace_cov / noise.grad_sq, rel=1e-5)
        assert noise.b_simple_error > 0
    assert noise.b_simple_low <= noise.trace_cov / noise.grad_sq or noise.grad_sq <= 0

    assert saved.train_curve == metrics.train_curve and saved.train_curve[-1][0] == 8


def test_a_resumed_run_measures_the_noise_scale_as_an_uninterrupted_one(tmp_path):
    cfg = compose_config([*SMALL, "steps=12", "diag.noise_every=3"])
    whole = train(build_run(cfg), tmp_path / "whole", to_dict(cfg))
    run = build_run(cfg)
    real_loss, steps = run.loss_fn, {"n": 0}

    def interrupted_at_7(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        steps["n"] += len(target) == run.batch  # a training step's batch, not a measurement's micro-batch
        if steps["n"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # stops after step 7, its checkpoint saved
        return real_loss(logits, target)

    run.loss_fn = interrupted_at_7
    assert train(run, tmp_path / "split", to_dict(cfg)).steps == 7
    resumed = train(build_run(cfg), tmp_path / "split", to_dict(cfg), resume=load_checkpoint(tmp_path / "split"))
    assert load_checkpoint(tmp_path / "split")["step"] == 12
    assert resumed.noise.history == whole.noise.history and resumed.noise.examples == whole.noise.examples
    assert resumed.noise.grad_sq == whole.noise.grad_sq


# a small MLP on real Fashion-MNIST, long enough that |G|² falls several-fold while the lr anneals: B_simple grows
# ~20x over the run's last 100 steps, so a value averaged over earlier weights is far off
REAL = ["model=mlp", "norm=none", "data=fashion_mnist", "data.subset=4096", "data.val_size=1000",
        "data.test_subset=1000", "model.depth=1", "model.width=32", "batch=64", "steps=150", "device=cpu", "diag=off"]


def exact_noise_scale(run: Any) -> tuple[float, float]:
    """(|G|², tr(Σ)) at the run's weights from every training example's own gradient (torch.func), over the
    whole training set the measurements draw from."""
    model = run.model
    params = {name: p.detach() for name, p in model.named_parameters()}

    def example_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return run.loss_fn(functional_call(model, p, (xi[None],)), yi[None])

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    total, squares, n = 0.0, 0.0, len(run.data.train_y)
    for start in range(0, n, 1024):
        x, y = run.prepare(run.data.train_x[start:start + 1024]), run.data.train_y[start:start + 1024]
        flat = torch.cat([g.reshape(len(y), -1) for g in per_example(params, x, y).values()], dim=1).double()
        total, squares = total + flat.sum(0), squares + flat.square().sum().item()
    grad_sq = (total / n).square().sum().item()
    return grad_sq, squares / n - grad_sq  # the training set's covariance: the draws are with replacement


@pytest.fixture(scope="module")
def two_cadences(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[int, NoiseScale], float, float]:
    """The same run measured every 10 and every 50 steps (which leaves its weights as they were): the last run, its
    noise scale by cadence, and the exact |G|² and tr(Σ) at the weights both end at."""
    needs_fashion()
    noise = {}
    for every in (10, 50):
        cfg = compose_config([*REAL, f"diag.noise_every={every}"])
        run = build_run(cfg)
        noise[every] = train(run, tmp_path_factory.mktemp(f"every{every}"), to_dict(cfg)).noise
    return run, noise, *exact_noise_scale(run)


@pytest.mark.slow
def test_runs_measured_at_two_cadences_report_the_b_simple_of_the_weights_they_end_at(two_cadences):
    run, noise, grad_sq, trace_cov = two_cadences
    often, seldom = noise[10], noise[50]
    # the value at a step depends on that step's weights and draws only, not on how often it was measured before
    assert often.b_simple == seldom.b_simple and often.b_simple_low == seldom.b_simple_low
    assert [point for point in often.history if point[0] % 50 == 0] == seldom.history  # at 50, 100 and 150
    exact = trace_cov / grad_sq  # ~2,800 where B_simple was ~140 at step 50 and ~230 at step 100
    assert often.b_simple_error < 0.3 * often.b_simple  # resolved to its precision, not a wide error
    assert abs(often.b_simple - exact) < 2 * often.b_simple_error, (often.b_simple, often.b_simple_error, exact)
    assert often.trace_cov == pytest.approx(trace_cov, abs=3 * often.trace_cov_error)
    assert often.b_simple_low < exact


@pytest.mark.slow
def test_at_fixed_weights_of_a_real_mlp_the_estimates_match_per_example_gradients_within_their_errors(two_cadences):
    run, _, grad_sq, trace_cov = two_cadences
    exact = trace_cov / grad_sq
    scores = []
    for draw in range(10):  # ten measurements with fresh examples, as at ten steps with these weights
        estimate = measure(run.model, run.loss_fn, noise_batches(run, 10_000 + draw), micro=64, most=4)
        assert math.isfinite(estimate.b_simple) and estimate.examples in (4096, 8192, 12288, 16384)
        scores.append((estimate.b_simple - exact) / estimate.b_simple_error)
    assert max(abs(score) for score in scores) < 3, scores
    assert 0.4 < math.sqrt(sum(score ** 2 for score in scores) / len(scores)) < 1.6, scores  # errors as stated


def test_the_noise_settings_are_checked():
    from diagnose.errors import UserError

    with pytest.raises(UserError, match="diag.noise_batch must hold at least 2 examples per micro-batch"):
        compose_config([*TINY, "diag.noise_batch=30", "diag.noise_micro=16"])
    with pytest.raises(UserError, match=r"diag.noise_max_batch \(2048\) must be at least diag.noise_batch \(4096\)"):
        compose_config([*TINY, "diag.noise_max_batch=2048"])
    with pytest.raises(UserError, match="diag.noise_micro must be a whole number >= 16"):
        compose_config([*TINY, "diag.noise_micro=8"])


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
