"""The input-output Jacobian's spectrum at initialisation against random-matrix and mean-field theory."""

import math

import pytest
import torch
from torch import nn

from diagnose.diagnostics.jacobian import (
    chi1,
    exact_spectra,
    fixed_point,
    gauss_expectation,
    geometric_mean,
    layer_chis,
    measured_chis,
    moment_spectra,
    weight_variance,
)
from diagnose.models.init import init_weights
from diagnose.models.mlp import build_mlp


def mlp(width: int, depth: int, act: type[nn.Module], init: str, sigma_w2: float = 1.0, seed: int = 0) -> nn.Module:
    """A square MLP (input = width) with weights of variance sigma_w2 / width: Gaussian or scaled orthogonal."""
    torch.manual_seed(seed)
    model = build_mlp(width, 10, depth, width, act, None).double()
    gain = math.sqrt(sigma_w2)
    if init == "orthogonal":
        init_weights(model, lambda w, g: nn.init.orthogonal_(w, gain), 1.0)
    else:
        init_weights(model, lambda w, g: nn.init.normal_(w, 0.0, gain / math.sqrt(w.shape[1])), 1.0)
    return model


def inputs(width: int, count: int = 1) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_a_linear_net_with_orthogonal_weights_has_every_singular_value_1():
    spectra = exact_spectra(mlp(32, 6, nn.Identity, "orthogonal"), inputs(32))
    for spectrum in spectra:
        assert spectrum.singular_values == pytest.approx([1.0] * 32, abs=1e-9)
        assert spectrum.max_over_min == pytest.approx(1.0)


def test_a_deep_linear_gaussian_net_has_mean_squared_singular_value_sigma_w_to_the_2L_and_a_growing_spread():
    sigma_w2 = 1.3
    spectra = exact_spectra(mlp(256, 6, nn.Identity, "gaussian", sigma_w2), inputs(256))
    for spectrum in spectra:  # E[tr(JᵀJ)/n] = σ_w^(2L); the finite-width fluctuation is a few percent
        assert spectrum.mean_sq == pytest.approx(sigma_w2 ** spectrum.depth, rel=0.1)
    relative_spread = [s.std_sq / s.mean_sq for s in spectra]
    assert relative_spread == sorted(relative_spread)  # a product of more random matrices spreads more
    assert relative_spread[-1] > 2 * relative_spread[0]


def test_relu_at_criticality_spreads_linearly_with_depth_and_less_with_orthogonal_weights():
    # Pennington, Schoenholz & Ganguli 2017: at χ₁ = 1 the variance of JJᵀ's eigenvalues is L (μ₂/μ₁² - 1 - s₁),
    # for ReLU μ₂/μ₁² = 2, s₁ = -1 for Gaussian and 0 for orthogonal weights: 2L vs L. Width 256, 4 seeds: the
    # finite-width error is ~15 %.
    def variance(init: str, depth: int) -> float:
        values = [exact_spectra(mlp(256, depth, nn.ReLU, init, sigma_w2=2.0, seed=seed), inputs(256))[-1]
                  for seed in range(4)]
        return sum(s.std_sq ** 2 for s in values) / len(values)

    for depth in (4, 8):
        assert variance("gaussian", depth) == pytest.approx(2 * depth, rel=0.25)
        assert variance("orthogonal", depth) == pytest.approx(depth, rel=0.25)


def test_chi1_from_quadrature_matches_monte_carlo():
    sigma_w2 = 1.5
    q = fixed_point(torch.tanh, sigma_w2)
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert q == pytest.approx(sigma_w2 * torch.tanh(math.sqrt(q) * z).square().mean().item(), rel=1e-2)
    slope = (1 - torch.tanh(math.sqrt(q) * z).square()).square()  # tanh' = 1 - tanh²
    monte_carlo = sigma_w2 * slope.mean().item()
    standard_error = sigma_w2 * slope.std().item() / math.sqrt(len(z))
    assert abs(chi1(torch.tanh, sigma_w2, q) - monte_carlo) < 4 * standard_error
    assert chi1(torch.relu, 2.0, 1.0) == pytest.approx(1.0, rel=1e-6)  # Kaiming: critical for every q
    assert gauss_expectation(lambda z: z ** 4) == pytest.approx(3.0)


def test_the_measured_chi1_follows_the_prediction_and_the_moments_match_the_exact_spectrum():
    model = mlp(128, 8, nn.Tanh, "gaussian", sigma_w2=0.8)
    sigma_w2 = weight_variance(model)
    assert sigma_w2 == pytest.approx(0.8, rel=0.05)
    exact = exact_spectra(model, inputs(128, count=2))
    # layer by layer from the input's length: the first layer's q1 = σ_w² E[x²]
    predicted = layer_chis(torch.tanh, sigma_w2, sigma_w2 * inputs(128, count=2).square().mean().item(), 8)[1:]
    measured = measured_chis(exact)
    assert measured == pytest.approx(predicted, rel=0.1)
    assert geometric_mean(measured) == pytest.approx(geometric_mean(predicted), rel=0.05)
    asymptotic = chi1(torch.tanh, sigma_w2, fixed_point(torch.tanh, sigma_w2))  # q* = 0 for σ_w² < 1: χ₁ = σ_w²
    assert asymptotic == pytest.approx(sigma_w2, rel=1e-3) and predicted == sorted(predicted)  # q shrinks to q*
    moments = moment_spectra(model, inputs(128, count=2), vectors=64)
    for e, m in zip(exact, moments, strict=True):
        assert m.mean_sq == pytest.approx(e.mean_sq, rel=0.15)
        assert m.std_sq == pytest.approx(e.std_sq, rel=0.3)
