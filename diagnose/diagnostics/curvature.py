"""The loss's curvature during training: the largest Hessian eigenvalue λ_max (sharpness) by power iteration and
the Hessian's trace by Hutchinson's estimator, both from Hessian-vector products (double backward), on a fixed
batch (PyHessian, Yao et al. 2020; Cockpit's HessMaxEV and HessTrace).

Gradient descent at learning rate η is stable along a direction of curvature λ only while λ < 2/η (2(1+β)/η with
heavy-ball momentum β): Cohen et al. (ICLR 2021) show full-batch training drives λ_max up to that threshold and then
hovers there, "at the edge of stability", the loss falling while it oscillates. The threshold is drawn beside
λ_max; Adam's is not (its steps are preconditioned: the raw Hessian's λ_max does not compare with 2/η).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.models.modes import leaves_no_trace
from diagnose.results import Curvature as CurvatureRecord
from diagnose.results import RunMetrics

Vectors = list[torch.Tensor]  # one tensor per parameter: a direction in weight space


def hessian_vector_product(loss: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> Callable:
    """v -> H v for the Hessian of loss() at `params`, by double backward; the gradient graph is built once."""
    grads = torch.autograd.grad(loss(), params, create_graph=True)

    def product(vectors: Vectors) -> Vectors:
        return list(torch.autograd.grad(grads, params, grad_outputs=vectors, retain_graph=True))

    return product


def _dot(a: Vectors, b: Vectors) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def top_eigenvalue(product: Callable[[Vectors], Vectors], like: Sequence[torch.Tensor], generator: torch.Generator,
                   iterations: int = 20, tolerance: float = 1e-3) -> torch.Tensor:
    """The Hessian's largest eigenvalue λ_max, by power iteration from a seeded random start: stops when the
    Rayleigh quotient changes by less than `tolerance` (relative), or after `iterations`. Power iteration finds
    the eigenvalue of largest magnitude; where that is negative, a second one on H - λI finds the top of the
    spectrum. One host sync per iteration, for the test."""
    top = _power_iteration(product, like, generator, iterations, tolerance)
    if top < 0:
        shift = top
        top = shift + _power_iteration(lambda v: [a - shift * b for a, b in zip(product(v), v, strict=True)], like,
                                       generator, iterations, tolerance)
    return top


def _power_iteration(product: Callable[[Vectors], Vectors], like: Sequence[torch.Tensor],
                     generator: torch.Generator, iterations: int, tolerance: float) -> torch.Tensor:
    v = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in like]
    eigenvalue = torch.zeros((), device=like[0].device)
    for _ in range(iterations):
        norm = _dot(v, v).sqrt()
        v = [x / norm for x in v]
        hv = product(v)
        previous, eigenvalue = eigenvalue, _dot(v, hv).detach()
        v = [x.detach() for x in hv]
        if abs(eigenvalue - previous) <= tolerance * abs(eigenvalue):
            break
    return eigenvalue


def hessian_trace(product: Callable[[Vectors], Vectors], like: Sequence[torch.Tensor], generator: torch.Generator,
                  samples: int = 10) -> torch.Tensor:
    """tr(H) by Hutchinson's estimator: the mean of vᵀHv over Rademacher vectors v (±1 entries), unbiased; its
    variance is 2 Σ_{i≠j} H_ij² / samples."""
    total = torch.zeros((), device=like[0].device)
    for _ in range(samples):
        v = [torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype) * 2 - 1 for p in like]
        total = total + _dot(v, product(v)).detach()
    return total / samples


def stability_threshold(lr: float, momentum: float, nesterov: bool = False) -> float:
    """The largest curvature gradient descent with momentum β is stable along: 2(1+β)/η for heavy ball,
    2(1+β)/(η(1+2β)) for torch's Nesterov form (its look-ahead takes the gradient's step twice)."""
    return 2 * (1 + momentum) / (lr * (1 + 2 * momentum if nesterov else 1))


def curvature(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, seed: int,
              iterations: int = 20, samples: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ_max, tr(H)) of the loss on (x, y) at the model's weights, which are left exactly as they were: BN's
    running statistics are put back and the random state (dropout) is forked."""
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(device=x.device).manual_seed(seed)  # the same probe vectors for the same seed
    with leaves_no_trace(model, x.device):
        product = hessian_vector_product(lambda: loss_fn(model(x), y), params)
        return top_eigenvalue(product, params, generator, iterations), hessian_trace(product, params, generator,
                                                                                     samples)


class Curvature(Instrument):
    """`curvature/lambda_max` and `curvature/trace` on a fixed batch every `every`-th step (and the last), before
    the step trains, with `curvature/threshold` = 2(1+β)/lr at that step where the optimizer is SGD."""

    def __init__(self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, every: int, last: int,
                 threshold: Callable[[], float | None], seed: int, iterations: int, samples: int):
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.every, self.last, self.threshold, self.seed = every, last, threshold, seed
        self.iterations, self.samples = iterations, samples
        self.history: list[tuple[int, float, float, float | None]] = []  # (step, lambda_max, trace, threshold)

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        if step % self.every and step != self.last:
            return
        top, trace = curvature(self.model, self.loss_fn, self.x, self.y, self.seed + step, self.iterations,
                               self.samples)
        readings.scalars.update({"curvature/lambda_max": top, "curvature/trace": trace})
        if (threshold := self.threshold()) is not None:
            readings.scalars["curvature/threshold"] = threshold

    def read_back(self, step: int, values: dict[str, float]) -> None:
        if "curvature/lambda_max" in values:
            self.history.append((step, values["curvature/lambda_max"], values["curvature/trace"],
                                 values.get("curvature/threshold")))

    def finish(self, metrics: RunMetrics) -> None:
        if self.history:
            metrics.curvature = CurvatureRecord(history=list(self.history))

    def state(self) -> dict[str, Any]:
        return {"history": [list(point) for point in self.history]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history = [tuple(point) for point in state.get("history", [])]

