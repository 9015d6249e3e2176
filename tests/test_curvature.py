"""Sharpness λ_max and the Hessian trace from Hessian-vector products, against Hessians known exactly."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from diagnose.diagnostics.curvature import (
    curvature,
    hessian_trace,
    hessian_vector_product,
    stability_threshold,
    top_eigenvalue,
)


def hutchinson_error(hessian: torch.Tensor, samples: int) -> float:
    """The standard error of Hutchinson's estimate with Rademacher vectors: sqrt(2 Σ_{i≠j} H_ij² / samples)."""
    off_diagonal = hessian - torch.diag(torch.diag(hessian))
    return math.sqrt(2 * off_diagonal.square().sum().item() / samples)


def test_on_a_quadratic_both_estimates_match_its_hessian():
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=generator, dtype=torch.float64))
    eigenvalues = torch.cat([torch.tensor([10.0, 5.0], dtype=torch.float64),
                             torch.linspace(-1.0, 3.0, 28, dtype=torch.float64)])
    hessian = q @ torch.diag(eigenvalues) @ q.T
    w = torch.randn(30, generator=generator, dtype=torch.float64, requires_grad=True)
    product = hessian_vector_product(lambda: 0.5 * w @ hessian @ w + w.sum(), [w])

    top = top_eigenvalue(product, [w], torch.Generator().manual_seed(1), iterations=200, tolerance=1e-9)
    assert top.item() == pytest.approx(10.0, rel=1e-6)
    samples = 400
    trace = hessian_trace(product, [w], torch.Generator().manual_seed(2), samples=samples)
    assert abs(trace.item() - eigenvalues.sum().item()) < 4 * hutchinson_error(hessian, samples)


def test_on_a_tiny_net_they_match_torch_autograd_functional_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = vector[offset:offset + shape.numel()].reshape(shape)
            offset += shape.numel()
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    exact = torch.linalg.eigvalsh(hessian)
    largest = exact[exact.abs().argmax()].item()

    params = list(model.parameters())
    product = hessian_vector_product(lambda: nn.functional.cross_entropy(model(x), y), params)
    top = top_eigenvalue(product, params, torch.Generator().manual_seed(0), iterations=500, tolerance=1e-12)
    assert top.item() == pytest.approx(largest, rel=1e-4)
    samples = 300
    trace = hessian_trace(product, params, torch.Generator().manual_seed(0), samples=samples)
    assert abs(trace.item() - hessian.trace().item()) < 4 * hutchinson_error(hessian, samples)


def test_measuring_is_deterministic_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    torch.manual_seed(7)
    first = curvature(model, nn.functional.cross_entropy, x, y, seed=3)
    after_first = torch.rand(1)  # the global random stream goes on as if nothing had drawn from it
    torch.manual_seed(7)
    second = curvature(model, nn.functional.cross_entropy, x, y, seed=3)
    assert torch.equal(after_first, torch.rand(1))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    assert curvature(model, nn.functional.cross_entropy, x, y, seed=4)[1] != first[1]  # other probe vectors


def test_the_stability_threshold_is_2_over_lr_raised_by_momentum():
    assert stability_threshold(0.1, 0.0) == pytest.approx(20.0)
    assert stability_threshold(0.1, 0.9) == pytest.approx(38.0)
    assert stability_threshold(0.1, 0.9, nesterov=True) == pytest.approx(38.0 / 2.8)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_on_a_quadratic_diverges_just_above_the_threshold_and_not_below(nesterov):
    lr, momentum = 0.1, 0.9
    threshold = stability_threshold(lr, momentum, nesterov)
    for curvature_value, diverges in ((0.95 * threshold, False), (1.05 * threshold, True)):
        w = torch.tensor([1.0], requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=lr, momentum=momentum, nesterov=nesterov)
        for _ in range(2000):
            optimizer.zero_grad()
            (0.5 * curvature_value * w.square()).sum().backward()
            optimizer.step()
        assert (not w.abs().item() <= 1.0) == diverges  # overflowed to NaN counts as diverged


def test_a_dominant_negative_eigenvalue_does_not_hide_the_top_of_the_spectrum():
    hessian = torch.diag(torch.tensor([-12.0, 3.0, 1.0], dtype=torch.float64))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    product = hessian_vector_product(lambda: 0.5 * w @ hessian @ w, [w])
    top = top_eigenvalue(product, [w], torch.Generator().manual_seed(0), iterations=500, tolerance=1e-10)
    assert top.item() == pytest.approx(3.0, rel=1e-6)


def test_a_run_charts_sharpness_against_sgds_threshold_and_trains_as_without(tmp_path):
    from conftest import TINY, compose_config, scalars

    from diagnose.build import build_run
    from diagnose.training.loop import train

    common = [*TINY, "steps=6", "diag.every=0", "diag.probe_every=0", "schedule=constant"]
    plain = build_run(compose_config(common))
    train(plain, tmp_path / "plain", {})
    measuring = ["diag.curvature_every=2", "diag.curvature_batch=64", "diag.curvature_iterations=5",
                 "diag.curvature_samples=2"]
    measured = build_run(compose_config([*common, *measuring]))
    metrics = train(measured, tmp_path / "measured", {})
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 measured.model.state_dict().values(), strict=True))
    logged = scalars(tmp_path / "measured")
    assert [step for step, _ in logged["curvature/lambda_max"]] == [2, 4, 6]
    lr = measured.optimizer.param_groups[0]["lr"]
    assert [value for _, value in logged["curvature/threshold"]] == pytest.approx([stability_threshold(lr, 0.9)] * 3)
    assert "curvature/trace" in logged and [h[0] for h in metrics.curvature.history] == [2, 4, 6]

    adam = train(build_run(compose_config([*common, *measuring, "optim=adam", "lr=0.001"])), tmp_path / "adam", {})
    assert "curvature/threshold" not in scalars(tmp_path / "adam")  # Adam's steps are preconditioned
    assert all(threshold is None for *_, threshold in adam.curvature.history)


def test_the_finding_says_when_the_sharpness_is_above_what_the_lr_allows():
    from diagnose.config import Thresholds
    from diagnose.findings import sharpness
    from diagnose.results import Curvature, RunMetrics

    history = [(10, 5.0, 50.0, 20.0), (20, 30.0, 80.0, 20.0), (30, 25.0, 90.0, 20.0)]
    (diverged,) = sharpness(RunMetrics(status="diverged", curvature=Curvature(history)), Thresholds())
    assert diverged.severity == "error" and "up to 1.5x it at step 20" in diverged.message
    assert "the lr is above what this curvature allows" in diverged.remedy and diverged.step == 20
    (edge,) = sharpness(RunMetrics(status="completed", curvature=Curvature(history)), Thresholds())
    assert edge.severity == "info" and "edge of stability" in edge.message  # 1.5x and 1.25x after reaching it
    assert "over the 2 measurements since, it stayed at 1.2-1.5x the threshold" in edge.message
    below = [(10, 5.0, 50.0, 20.0), (20, 19.0, 80.0, 20.0)]
    assert sharpness(RunMetrics(status="diverged", curvature=Curvature(below)), Thresholds()) == []
    assert sharpness(RunMetrics(status="completed", curvature=Curvature([(10, 50.0, 1.0, None)])), Thresholds()) == []
