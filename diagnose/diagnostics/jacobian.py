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

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from torch import nn
from torch.func import jacfwd, jvp, vjp

from diagnose.components.layers import width_multiplier
from diagnose.models.blocks import Block
from diagnose.models.modes import batch_statistics
from diagnose.results import JacobianSpectrum

EXACT_LIMIT = 60_000_000  # Jacobian entries (over all depths) up to which it is computed exactly
# The Gaussian expectations' rule (gaussian_rule), ~1000 nodes: checked against Monte Carlo for every registered
# activation at q from 1e-3 to 1e4 (tests/test_jacobian.py); it agrees with a 6M-point trapezoid to 4e-11 there
# (relative, E[tanh'²]; ReLU's step is exact here, where the trapezoid is off 2e-6)
NODES = 8  # Gauss-Legendre nodes per panel: exact for polynomials of degree 15 on each
PANELS = 40  # across the Gaussian's ±STDS std: a panel is std / 2 wide
STDS = 10.0  # the density beyond 10 std is below 1e-22 of its peak
SCALE = 1.0  # the activation's own panels: sigmoid'² and tanh'² bend over ~1 in h, ReLU's kink is an edge at 0
REACH = 40.0  # beyond |h| = 40 a registered φ is linear or flat to double precision (sigmoid' ~ e^-40)


Progress = Callable[[int, int, str], None]  # (units done, units in all, what is being done now)


def quiet(done: int, total: int, doing: str) -> None:
    """A Progress that shows nothing."""


@dataclass
class DepthSpectrum:
    """The squared singular values of J_l at one depth, summarised (pooled over the examples)."""

    depth: int
    mean_sq: float  # mean of σ² over the n_in of them (= tr(JᵀJ) / n_in)
    unit_sq: float  # tr(JᵀJ) / n_out: an output unit's mean squared gain, which grows by χ₁ per layer whatever
    # the layer's width (a max-pool between stages keeps it; it would cut mean_sq by the pooled factor)
    std_sq: float  # their standard deviation: the spread that dynamical isometry keeps small
    # largest / smallest non-zero σ²; None when some non-zero σ² are below J's precision (it exceeds `resolution`)
    # or when estimated from moments
    max_over_min: float | None
    zero_share: float | None  # share of σ² that are exactly 0 (`exact_spectra`); None from moments
    unresolved_share: float | None = None  # share of σ² not known to be 0 but below J's precision; None from moments
    resolution: float | None = None  # the largest max / min that J's precision resolves; None from moments
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


def relative_precision(jacobian: torch.Tensor) -> float:
    """σ below this fraction of the largest are rounding, of J's entries and of the SVD in J's precision (the
    tolerance of torch.linalg.matrix_rank): ~1.2e-4 for a float32 J of 1000 x 784."""
    return max(jacobian.shape) * torch.finfo(jacobian.dtype).eps


def exact_spectra(model: nn.Module, xs: torch.Tensor, progress: Progress = quiet) -> list[DepthSpectrum]:
    """The singular values of every J_l at each example of `xs`, pooled per depth.

    Zeros are counted, not thresholded: J_l = (∂h_l/∂h_k) J_k, so its rank is at most the number of non-zero rows
    of every J_k, k ≤ l (a ReLU at h ≤ 0, a sigmoid or tanh saturated to rounding, cuts a row to exactly 0; a J
    with fewer outputs than inputs has n_in - n_out zeros); that many are exactly 0 and the SVD's values there are
    rounding. Of the rest, those below J's precision are "unresolved": small, but not measured."""
    blocks = blocks_of(model)
    total = len(xs) * len(blocks)
    per_depth: list[list[torch.Tensor]] = [[] for _ in blocks]
    resolved: list[list[torch.Tensor]] = [[] for _ in blocks]
    zeros, outputs, limits = [0] * len(blocks), [0] * len(blocks), [0.0] * len(blocks)
    finite = len(blocks)  # the depths up to which every J is finite: an overflowing signal has no spectrum beyond
    for i, x in enumerate(xs):
        progress(i * len(blocks), total, f"example {i + 1}/{len(xs)}: J at every depth (jacfwd)")
        jacobians = jacfwd(block_outputs(model, blocks))(x)
        rank = x.numel()  # at most this many σ of J_l are not 0
        for depth, jacobian in enumerate(jacobians[:finite]):
            progress(i * len(blocks) + depth, total, f"example {i + 1}/{len(xs)}: singular values per depth")
            flat = jacobian.reshape(jacobian.shape[0], -1)  # (n_out, n_in)
            singular = torch.linalg.svdvals(flat) if flat.isfinite().all() else None
            if singular is None or not singular.isfinite().all():  # J, or its SVD in J's precision, overflows
                finite = depth
                break
            rank = min(rank, int(flat.ne(0).any(dim=1).sum()))
            values = flat.new_zeros(flat.shape[1], dtype=torch.float64)  # n_in of them, descending
            values[:rank] = singular[:rank].double()
            precision = relative_precision(flat)
            per_depth[depth].append(values)
            resolved[depth].append(values > precision * values[0])
            zeros[depth] += flat.shape[1] - rank
            outputs[depth], limits[depth] = flat.shape[0], precision ** -2
    progress(total, total, "done")
    spectra = []
    for depth, values in enumerate(per_depth[:finite], start=1):
        sv = torch.cat(values)
        sq, seen = sv.square(), torch.cat(resolved[depth - 1])
        unresolved = len(sq) - zeros[depth - 1] - int(seen.sum())
        spread = None if unresolved else (sq.max() / sq[seen].min()).item() if seen.any() else math.nan
        unit = sq.sum().item() / len(values) / outputs[depth - 1]
        spectra.append(DepthSpectrum(depth, sq.mean().item(), unit, sq.std().item(), spread,
                                     zeros[depth - 1] / len(sq), unresolved / len(sq), limits[depth - 1],
                                     sv.tolist()))
    return spectra


def moment_spectra(model: nn.Module, xs: torch.Tensor, vectors: int = 16, seed: int = 0,
                   progress: Progress = quiet) -> list[DepthSpectrum]:
    """m1 = tr(JᵀJ)/n and m2 = tr((JᵀJ)²)/n from Gaussian v: E|Jv|² = tr(JᵀJ), E|JᵀJv|² = tr((JᵀJ)²); the std of
    the squared singular values is sqrt(m2 - m1²) (over the n = n_in of them, as `exact_spectra` pools)."""
    blocks = blocks_of(model)
    outputs = block_outputs(model, blocks)
    generator = torch.Generator(device=xs.device).manual_seed(seed)
    first, second = torch.zeros(len(blocks), dtype=torch.float64), torch.zeros(len(blocks), dtype=torch.float64)
    n = xs[0].numel()
    widths: list[int] = []
    for i, x in enumerate(xs):
        _, pullback = vjp(outputs, x)
        for k in range(vectors):
            progress(i * vectors + k, len(xs) * vectors, f"example {i + 1}/{len(xs)}: random directions (jvp, vjp)")
            v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            _, pushed = jvp(outputs, (x,), (v,))
            widths = [len(jv) for jv in pushed]
            for depth, jv in enumerate(pushed):
                first[depth] += jv.square().sum().item()
                cotangents = tuple(jv if j == depth else torch.zeros_like(out) for j, out in enumerate(pushed))
                second[depth] += pullback(cotangents)[0].square().sum().item()
    progress(len(xs) * vectors, len(xs) * vectors, "done")
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


def gaussian_rule(q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes h and weights w with Σ w f(h) = E[f(h)], h ~ N(0, q), for any q and any registered φ: Gauss-Legendre
    on panels that resolve both the Gaussian (PANELS across ±STDS std) and the activation's own features (kinks
    at 0, transitions ~1 wide, up to |h| = REACH). A fixed Gauss-Hermite rule in z = h/√q cannot: its nodes
    are ~√q apart in h, so at q ~ 300 it misses sigmoid'² (a spike ~2 wide) and gave χ₁ 0.11 for ~3.0."""
    if q <= 0:  # h = 0 exactly
        return torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    reach = STDS * math.sqrt(q)
    gaussian = torch.linspace(-reach, reach, PANELS + 1, dtype=torch.float64)  # holds 0: PANELS is even
    steps = math.floor(min(reach, REACH) / SCALE)
    own = torch.arange(-steps, steps + 1, dtype=torch.float64) * SCALE
    edges = torch.unique(torch.cat([gaussian, own[own.abs() < reach]]))  # sorted
    middle, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes, weights = _legendre()
    h = (middle[:, None] + half[:, None] * nodes).flatten()  # (panels * NODES,)
    w = (half[:, None] * weights).flatten() * torch.exp(-h * h / (2 * q)) / math.sqrt(2 * math.pi * q)
    return h, w


@cache
def _legendre() -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre nodes and weights on [-1, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(NODES)
    return torch.tensor(nodes, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)


def expectation(f: Callable[[torch.Tensor], torch.Tensor], q: float) -> float:
    """E[f(h)] for h ~ N(0, q): f of the pre-activation itself, h = √q z."""
    h, w = gaussian_rule(q)
    return float((w * f(h)).sum())


def derivative(phi: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """φ' elementwise, by autograd."""

    def slope(h: torch.Tensor) -> torch.Tensor:
        h = h.detach().requires_grad_(True)
        return torch.autograd.grad(phi(h).sum(), h)[0]

    return slope


def length_map(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q: float) -> float:
    """The next layer's pre-activation length σ_w² E[φ(h)²], h ~ N(0, q) (no bias: this tool initialises biases
    at zero)."""
    return sigma_w2 * expectation(lambda h: phi(h) ** 2, q)


def fixed_point(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q0: float = 1.0,
                iterations: int = 200) -> float:
    """q* of the length map, followed from q0 (q -> 0 for an ordered tanh net: it stops at 1e-30)."""
    q = q0
    for _ in range(iterations):
        q, before = length_map(phi, sigma_w2, q), q
        if not math.isfinite(q) or q > 1e30 or q < 1e-30 or abs(q - before) <= 1e-12 * q:
            break
    return q


def chi1(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2: float, q: float) -> float:
    """χ₁ = σ_w² E[φ'(h)²], h ~ N(0, q): the factor by which an output unit's mean squared gain grows per layer."""
    slope = derivative(phi)
    return sigma_w2 * expectation(lambda h: slope(h) ** 2, q)


def layer_chis(phi: Callable[[torch.Tensor], torch.Tensor], sigma_w2s: list[float], q1: float) -> list[float]:
    """χ at each depth, with each layer's own σ_w² (the first layer's fan-in is the input's), following the
    pre-activation length q_l layer by layer from the first layer's q1 (= σ_w1² E[x²]) rather than from the fixed
    point: a net shallower than the length map's settling depth sees the transient. χ at depth l is the growth of
    an output unit's mean squared gain from depth l-1 to l."""
    chis, q = [], q1
    for depth, sigma_w2 in enumerate(sigma_w2s):
        chis.append(chi1(phi, sigma_w2, q))
        if depth + 1 < len(sigma_w2s):
            q = length_map(phi, sigma_w2s[depth + 1], q)
    return chis


def geometric_mean(values: list[float]) -> float | None:
    if not values or any(v <= 0 for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def depth_scale(chi: float) -> float:
    """ξ = 1/|ln χ₁|: infinite at criticality (χ₁ = 1)."""
    return math.inf if chi <= 0 or chi == 1 else 1 / abs(math.log(chi))


def weight_variances(model: nn.Module) -> list[float]:
    """σ_w² = fan_in · Var(W) of each block's weight layer, in depth order: what the chosen init gave (the first
    layer's fan-in is the input's, so init=normal gives it another σ_w² than the rest)."""
    values = []
    for block in blocks_of(model):
        weight = next(m for m in block.children() if isinstance(m, nn.Conv2d | nn.Linear)).weight
        values.append(weight[0].numel() * weight.detach().double().square().mean().item())
    return values


def measured_chis(spectra: list[DepthSpectrum]) -> list[float]:
    """The growth of an output unit's mean squared gain from each depth to the next (depths 2..L): measured χ."""
    means = [s.unit_sq for s in spectra]
    return [after / before if before > 0 else math.nan for before, after in zip(means, means[1:], strict=False)]


def mean_field_phi(activation: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """φ in float64 for the mean-field prediction; None where the activation is not elementwise (maxout takes a
    max over pieces: no single φ)."""
    # a copy: .double() converts a module in place
    return copy.deepcopy(activation).double() if width_multiplier(activation) == 1 else None


def jacobian_spectrum(model: nn.Module, xs: torch.Tensor, phi: Callable[[torch.Tensor], torch.Tensor] | None,
                      method: str = "auto", progress: Progress = quiet) -> tuple[JacobianSpectrum, list[DepthSpectrum]]:
    """The spectrum of J_l at every depth for the examples `xs` (exact or by moments, `method` auto picks by size),
    with the mean-field prediction where the activation `phi` is elementwise and nothing normalises (else None)."""
    exact = method == "exact" or (method == "auto" and jacobian_entries(model, xs[0]) <= EXACT_LIMIT)
    with batch_statistics(model):  # dropout off: its random masks have no Jacobian (and vmap refuses them)
        spectra = exact_spectra(model, xs, progress) if exact else moment_spectra(model, xs, progress=progress)
    sigma_w2s = weight_variances(model)
    deep = sigma_w2s[1:] or sigma_w2s  # the layers the measured χ covers (depth 2..L)
    sigma_w2 = sum(deep) / len(deep)
    result = JacobianSpectrum("exact" if exact else "moments", sigma_w2,
                              [(s.depth, s.mean_sq, s.std_sq, s.max_over_min, s.zero_share, growth)
                               for s, growth in zip(spectra, [None, *measured_chis(spectra)], strict=True)],
                              chi_measured=geometric_mean(measured_chis(spectra)))
    if phi is not None:
        q1 = sigma_w2s[0] * xs.double().square().mean().item()  # the first layer's pre-activation length
        result.chi_predicted = geometric_mean(layer_chis(phi, sigma_w2s, q1)[1:])
        result.chi_fixed_point = chi1(phi, sigma_w2, fixed_point(phi, sigma_w2, q1))
    chi = result.chi_fixed_point if result.chi_fixed_point is not None else result.chi_measured
    result.depth_scale = None if chi is None else depth_scale(chi)
    return result, spectra
