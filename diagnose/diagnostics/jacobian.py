"""The input-output Jacobian's spectrum at initialisation, per depth, and the mean-field theory that predicts it.

J_l = ∂h_l/∂x, the Jacobian of block l's output with respect to the input, for one example. Its squared singular
values say how a small change of the input is stretched on its way to depth l: their mean grows or shrinks by χ₁
per layer, and their spread (how unequally directions are stretched) grows with depth unless the network is
"dynamically isometric" (Pennington, Schoenholz & Ganguli 2017). Mean-field theory (Poole et al. 2016; Schoenholz
et al. 2017) predicts χ₁ = σ_w² E[φ'(√q* z)²] for weights of variance σ_w²/fan_in, with q* the fixed point of
q = σ_w² E[φ(√q z)²], and the depth scale ξ = 1/|ln χ₁| over which the signal's geometry survives: a network much
deeper than ~6ξ does not train.

Exactly (torch.func.jacfwd, then the singular values) where J is small enough; otherwise the first two moments of
the squared singular values by Hutchinson's estimator with Jacobian-vector and vector-Jacobian products.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import jacfwd, jvp, vjp

from diagnose.models.blocks import Block
from diagnose.models.modes import batch_statistics
from diagnose.results import JacobianSpectrum

EXACT_LIMIT = 60_000_000  # Jacobian entries (over all depths) up to which it is computed exactly
ZERO = 1e-10  # a squared singular value below this fraction of the largest is 0 (rounding of an exact zero)
QUADRATURE_POINTS = 80  # Gauss-Hermite nodes: E[f(z)] exact for polynomials up to degree 159


@dataclass
class DepthSpectrum:
    """The squared singular values of J_l at one depth, summarised (pooled over the examples)."""

    depth: int
    mean_sq: float  # mean of σ² over the n_in of them (= tr(JᵀJ) / n_in)
    unit_sq: float  # tr(JᵀJ) / n_out: an output unit's mean squared gain, which grows by χ₁ per layer whatever
    # the layer's width (a max-pool between stages keeps it; it would cut mean_sq by the pooled factor)
    std_sq: float  # their standard deviation: the spread that dynamical isometry keeps small
    max_over_min: float | None  # largest / smallest non-zero σ² (None when estimated from moments)
    zero_share: float | None  # share of σ² that are 0 (directions a ReLU layer cuts off); None from moments
    singular_values: list[float] = field(default_factory=list)  # exact only


def blocks_of(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, Block)]


def block_outputs(model: nn.Module, blocks: list[nn.Module]) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """x (one example) -> each block's output, flattened, in depth order."""

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: list[torch.Tensor] = []
        handles = [b.register_forward_hook(lambda module, args, out: seen.append(out.flatten())) for b in blocks]
        try:
            model(x[None])
        finally:
            for handle in handles:
                handle.remove()
        return tuple(seen)

    return outputs


def exact_spectra(model: nn.Module, xs: torch.Tensor) -> list[DepthSpectrum]:
    """The singular values of every J_l at each example of `xs`, pooled per depth; a J with fewer outputs than
    inputs has n_in - n_out more singular values that are 0, counted as such (as `moment_spectra` averages)."""
    blocks = blocks_of(model)
    per_depth: list[list[torch.Tensor]] = [[] for _ in blocks]
    outputs: list[int] = [0] * len(blocks)
    for x in xs:
        jacobians = jacfwd(block_outputs(model, blocks))(x)
        for depth, jacobian in enumerate(jacobians):
            flat = jacobian.reshape(jacobian.shape[0], -1).double()
            values = torch.linalg.svdvals(flat)
            per_depth[depth].append(torch.cat([values, values.new_zeros(flat.shape[1] - len(values))]))
            outputs[depth] = flat.shape[0]
    spectra = []
    for depth, values in enumerate(per_depth, start=1):
        sv = torch.cat(values)
        sq = sv.square()
        nonzero = sq[sq > ZERO * sq.max()]
        spread = (nonzero.max() / nonzero.min()).item() if len(nonzero) else math.nan
        unit = sq.sum().item() / len(values) / outputs[depth - 1]
        spectra.append(DepthSpectrum(depth, sq.mean().item(), unit, sq.std().item(), spread,
                                     1 - len(nonzero) / len(sq), sv.tolist()))
    return spectra


def moment_spectra(model: nn.Module, xs: torch.Tensor, vectors: int = 16, seed: int = 0) -> list[DepthSpectrum]:
    """m1 = tr(JᵀJ)/n and m2 = tr((JᵀJ)²)/n from Gaussian v: E|Jv|² = tr(JᵀJ), E|JᵀJv|² = tr((JᵀJ)²); the std of
    the squared singular values is sqrt(m2 - m1²) (over the n = n_in of them, as `exact_spectra` pools)."""
    blocks = blocks_of(model)
    outputs = block_outputs(model, blocks)
    generator = torch.Generator(device=xs.device).manual_seed(seed)
    first, second = torch.zeros(len(blocks), dtype=torch.float64), torch.zeros(len(blocks), dtype=torch.float64)
    n = xs[0].numel()
    widths: list[int] = []
    for x in xs:
        _, pullback = vjp(outputs, x)
        for _ in range(vectors):
            v = torch.randn(x.shape, generator=generator, device=x.device)
            _, pushed = jvp(outputs, (x,), (v,))
            widths = [len(jv) for jv in pushed]
            for depth, jv in enumerate(pushed):
                first[depth] += jv.square().sum().item()
                cotangents = tuple(jv if i == depth else torch.zeros_like(out) for i, out in enumerate(pushed))
                second[depth] += pullback(cotangents)[0].square().sum().item()
    count = len(xs) * vectors
    spectra = []
    for depth in range(len(blocks)):
        m1, m2 = first[depth].item() / count / n, second[depth].item() / count / n
        spectra.append(DepthSpectrum(depth + 1, m1, m1 * n / widths[depth], math.sqrt(max(m2 - m1 * m1, 0.0)), None,
                                     None))
    return spectra


def jacobian_entries(model: nn.Module, x: torch.Tensor) -> int:
    """How many entries the Jacobians of one example at every depth hold."""
    with torch.no_grad():
        return x.numel() * sum(out.numel() for out in block_outputs(model, blocks_of(model))(x))


def gauss_expectation(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """E[f(z)], z ~ N(0, 1), by Gauss-Hermite quadrature (probabilists' weights)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
    values = f(torch.tensor(nodes, dtype=torch.float64))
    return float((values * torch.tensor(weights, dtype=torch.float64)).sum() / math.sqrt(2 * math.pi))


def derivative(phi: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """φ' elementwise, by autograd."""

    def slope(z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(phi(z).sum(), z)[0]

    return slope


def fixed_point(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q0: float = 1.0,
                iterations: int = 200) -> float:
    """q* of the length map q -> σ_w² E[φ(√q z)²] (no bias: this tool initialises biases at zero), from q0."""
    q = q0
    for _ in range(iterations):
        q = sigma_w2 * gauss_expectation(lambda z, q=q: phi(math.sqrt(q) * z) ** 2)
        if not math.isfinite(q) or q > 1e30 or q < 1e-30:
            break
    return q


def chi1(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q: float) -> float:
    """χ₁ = σ_w² E[φ'(√q z)²]: the factor by which the mean squared singular value of J grows per layer."""
    slope = derivative(phi)
    return sigma_w2 * gauss_expectation(lambda z: slope(math.sqrt(max(q, 0.0)) * z) ** 2)


def layer_chis(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q1: float, depth: int) -> list[float]:
    """χ at each depth 1..depth, following the pre-activation length q_l layer by layer from the first layer's q1
    (= σ_w² E[x²]) rather than from the fixed point: a net shallower than the length map's settling depth sees the
    transient. χ at depth l is the growth of the mean squared singular value from depth l-1 to l."""
    chis, q = [], q1
    for _ in range(depth):
        chis.append(chi1(phi, sigma_w2, q))
        q = sigma_w2 * gauss_expectation(lambda z, q=q: phi(math.sqrt(max(q, 0.0)) * z) ** 2)
    return chis


def geometric_mean(values: list[float]) -> float | None:
    if not values or any(v <= 0 for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def depth_scale(chi: float) -> float:
    """ξ = 1/|ln χ₁|: infinite at criticality (χ₁ = 1)."""
    return math.inf if chi <= 0 or chi == 1 else 1 / abs(math.log(chi))


def weight_variance(model: nn.Module) -> float:
    """σ_w² = fan_in · Var(W), averaged over the hidden blocks' weight layers: what the chosen init gave."""
    values = []
    for block in blocks_of(model):
        weight = next(m for m in block.children() if isinstance(m, nn.Conv2d | nn.Linear)).weight
        fan_in = weight[0].numel()
        values.append(fan_in * weight.detach().double().square().mean().item())
    return sum(values) / len(values)


def measured_chis(spectra: list[DepthSpectrum]) -> list[float]:
    """The growth of an output unit's mean squared gain from each depth to the next (depths 2..L): measured χ."""
    means = [s.unit_sq for s in spectra]
    return [after / before if before > 0 else math.nan for before, after in zip(means, means[1:], strict=False)]


def jacobian_spectrum(model: nn.Module, xs: torch.Tensor, phi: Callable[[torch.Tensor], torch.Tensor] | None,
                      method: str = "auto") -> tuple[JacobianSpectrum, list[DepthSpectrum]]:
    """The spectrum of J_l at every depth for the examples `xs` (exact or by moments, `method` auto picks by size),
    with the mean-field prediction where the activation `phi` is elementwise and nothing normalises (else None)."""
    exact = method == "exact" or (method == "auto" and jacobian_entries(model, xs[0]) <= EXACT_LIMIT)
    with batch_statistics(model):  # dropout off: its random masks have no Jacobian (and vmap refuses them)
        spectra = exact_spectra(model, xs) if exact else moment_spectra(model, xs)
    sigma_w2 = weight_variance(model)
    result = JacobianSpectrum("exact" if exact else "moments", sigma_w2,
                              [(s.depth, s.mean_sq, s.std_sq, s.max_over_min, s.zero_share, growth)
                               for s, growth in zip(spectra, [None, *measured_chis(spectra)], strict=True)],
                              chi_measured=geometric_mean(measured_chis(spectra)))
    if phi is not None:
        q1 = sigma_w2 * xs.double().square().mean().item()  # the first layer's pre-activation length
        result.chi_predicted = geometric_mean(layer_chis(phi, sigma_w2, q1, len(spectra))[1:])
        result.chi_fixed_point = chi1(phi, sigma_w2, fixed_point(phi, sigma_w2, q1))
    chi = result.chi_fixed_point if result.chi_fixed_point is not None else result.chi_measured
    result.depth_scale = None if chi is None else depth_scale(chi)
    return result, spectra
