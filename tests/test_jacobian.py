"""The input-output Jacobian's spectrum at initialisation against random-matrix and mean-field theory."""

import functools
import math

import pytest
import torch
from torch import nn
from torch.func import jacfwd

from diagnose.components.activations import ACTIVATIONS
from diagnose.diagnostics.jacobian import (
    block_outputs,
    blocks_of,
    chi1,
    derivative,
    exact_spectra,
    expectation,
    fixed_point,
    geometric_mean,
    layer_chis,
    length_map,
    mean_field_phi,
    measured_chis,
    moment_spectra,
    weight_variances,
)
from diagnose.models.init import init_weights
from diagnose.models.mlp import build_mlp
from diagnose.registry import make


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


def test_the_measured_chi1_follows_the_prediction_and_the_moments_match_the_exact_spectrum():
    model = mlp(128, 8, nn.Tanh, "gaussian", sigma_w2=0.8)
    sigma_w2s = weight_variances(model)
    assert sigma_w2s == pytest.approx([0.8] * 8, rel=0.05)
    exact = exact_spectra(model, inputs(128, count=2))
    # layer by layer from the input's length: the first layer's q1 = σ_w² E[x²]
    predicted = layer_chis(torch.tanh, sigma_w2s, sigma_w2s[0] * inputs(128, count=2).square().mean().item())[1:]
    measured = measured_chis(exact)
    assert measured == pytest.approx(predicted, rel=0.1)
    assert geometric_mean(measured) == pytest.approx(geometric_mean(predicted), rel=0.05)
    asymptotic = chi1(torch.tanh, 0.8, fixed_point(torch.tanh, 0.8))  # q* = 0 for σ_w² < 1: χ₁ = σ_w²
    assert asymptotic == pytest.approx(0.8, rel=1e-3) and predicted == sorted(predicted)  # q shrinks to q*
    moments = moment_spectra(model, inputs(128, count=2), vectors=64)
    for e, m in zip(exact, moments, strict=True):
        assert m.mean_sq == pytest.approx(e.mean_sq, rel=0.15)
        assert m.std_sq == pytest.approx(e.std_sq, rel=0.3)


def phi_of(name: str) -> nn.Module | None:
    """The registered activation with its default settings, as the probe predicts with it (None: no prediction)."""
    entry = ACTIVATIONS[name]
    return mean_field_phi(make(entry, entry.options()))


@functools.cache
def normal_samples() -> torch.Tensor:
    return torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def monte_carlo(values: torch.Tensor) -> tuple[float, float]:
    """The mean of samples and its standard error."""
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


@pytest.mark.parametrize("q", [10.0 ** k for k in range(-3, 5)])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_the_length_map_and_chi1_match_monte_carlo_at_every_scale_for_every_activation(name, q):
    # 1e6 samples: a standard error of ~1 % even where φ'² is a spike (sigmoid at q = 1e4: 1 % of h fall in it);
    # the 80-node Gauss-Hermite rule this replaces was off 30x there (sigmoid χ₁ at q ~ 300: 0.11 for 3.0)
    phi = phi_of(name)
    if phi is None:  # not elementwise: it maps 8 inputs to fewer outputs, and the probe predicts nothing for it
        assert make(ACTIVATIONS[name], ACTIVATIONS[name].options())(torch.randn(2, 8)).shape[-1] < 8
        return
    h = math.sqrt(q) * normal_samples()
    for predicted, samples in ((length_map(phi, 1.0, q), phi(h).square()),
                               (chi1(phi, 1.0, q), derivative(phi)(h).square())):
        mean, error = monte_carlo(samples)
        assert error <= 0.02 * mean
        assert abs(predicted - mean) <= 4 * error + 1e-12 * mean, (predicted, mean, error)


def test_gaussian_expectations_are_exact_for_polynomials_and_kaiming_relu_is_critical_at_every_scale():
    for q in (1e-3, 1.0, 7.0, 1e4):
        assert expectation(lambda h: h ** 4, q) == pytest.approx(3 * q * q, rel=1e-12)
        assert expectation(lambda h: torch.ones_like(h), q) == pytest.approx(1.0, rel=1e-12)
        assert chi1(torch.relu, 2.0, q) == pytest.approx(1.0, rel=1e-12)  # half the units pass, with gain 2
        assert length_map(torch.relu, 2.0, q) == pytest.approx(q, rel=1e-12)


# (activation, σ_w², width, examples, per-layer and all-layer tolerance): saturated sigmoid (init=normal std=1.0 at
# width 1000: σ_w² = 1000, q* ~ 500, χ₁ ~ 3, with only ~10 % of the units in sigmoid's slope: the noisiest);
# ReLU with Kaiming and tanh with σ_w² = 1, both critical
GROWTH_CASES = [(nn.Sigmoid, 1000.0, 512, 2, 0.3, 0.12), (nn.ReLU, 2.0, 256, 2, 0.2, 0.05),
                (nn.Tanh, 1.0, 128, 2, 0.1, 0.05)]


@pytest.mark.parametrize(("act", "sigma_w2", "width", "examples", "each", "overall"), GROWTH_CASES)
def test_the_predicted_growth_per_layer_is_the_measured_one_on_saturated_and_critical_nets(act, sigma_w2, width,
                                                                                         examples, each, overall):
    model = mlp(width, 6, act, "gaussian", sigma_w2)
    xs = inputs(width, examples)
    sigma_w2s = weight_variances(model)
    predicted = layer_chis(act().double(), sigma_w2s, sigma_w2s[0] * xs.square().mean().item())[1:]
    measured = measured_chis(exact_spectra(model, xs))
    assert measured == pytest.approx(predicted, rel=each)
    assert geometric_mean(measured) == pytest.approx(geometric_mean(predicted), rel=overall)


def test_zeros_are_counted_where_a_relu_cuts_a_direction_off_and_nowhere_else():
    # ReLU: σ² = 0 exactly where J's rank falls short; the rank measured by matrix_rank (an SVD threshold, exact
    # here in float64) agrees with the count of cut-off rows
    model = mlp(48, 5, nn.ReLU, "gaussian", sigma_w2=2.0)
    x = inputs(48)[0]
    spectra = exact_spectra(model, x[None])
    jacobians = jacfwd(block_outputs(model, blocks_of(model)))(x)
    for spectrum, jacobian in zip(spectra, jacobians, strict=True):
        assert spectrum.zero_share == pytest.approx(1 - torch.linalg.matrix_rank(jacobian).item() / 48)
        assert spectrum.zero_share > 0.3 and spectrum.unresolved_share == 0
    # an ordered tanh net: no σ² is 0, though many are below 1e-10 of the largest (the old threshold's "zeros")
    ordered = exact_spectra(mlp(48, 10, nn.Tanh, "gaussian", sigma_w2=0.5), inputs(48))[-1]
    squares = torch.tensor(ordered.singular_values).square()
    assert ordered.zero_share == 0 and (squares < 1e-10 * squares.max()).float().mean() > 0.1
    assert ordered.max_over_min == pytest.approx((squares.max() / squares.min()).item())


def test_a_jacobian_with_fewer_outputs_than_inputs_has_their_difference_as_zeros_and_a_float32_one_says_its_limit():
    narrow = build_mlp(64, 10, 3, 16, nn.Tanh, None).double()  # 64 inputs, 16 outputs a layer
    for spectrum in exact_spectra(narrow, inputs(64)):
        assert spectrum.zero_share == 0.75 and len(spectrum.singular_values) == 64
        assert spectrum.max_over_min == pytest.approx(max(spectrum.singular_values) ** 2
                                                      / min(v for v in spectrum.singular_values if v > 0) ** 2)
    # float32, deep and ordered: the smallest σ² fall below what float32 resolves, and max/min is not claimed
    deep = mlp(64, 20, nn.Tanh, "gaussian", sigma_w2=0.3).float()
    last = exact_spectra(deep, inputs(64).float())[-1]
    assert last.max_over_min is None and last.unresolved_share > 0 and last.zero_share == 0
    assert last.resolution == pytest.approx((64 * torch.finfo(torch.float32).eps) ** -2)


def test_progress_is_reported_through_every_example_and_depth():
    seen: list[tuple[int, int, str]] = []
    exact_spectra(mlp(16, 3, nn.Tanh, "gaussian"), inputs(16, count=2), lambda *step: seen.append(step))
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)
    assert seen[-1][:2] == (6, 6) and {total for _, total, _ in seen} == {6}
    assert any("example 2/2" in doing for _, _, doing in seen)
    seen.clear()
    moment_spectra(mlp(16, 3, nn.Tanh, "gaussian"), inputs(16), vectors=4, progress=lambda *step: seen.append(step))
    assert seen[-1][:2] == (4, 4)
