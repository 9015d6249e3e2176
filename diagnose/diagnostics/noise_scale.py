"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", appendix A):
B_simple = tr(Σ) / |G|², the per-example gradient covariance's trace over the squared true gradient. It predicts
the critical batch size: below it a larger batch needs proportionally fewer steps, above it most of each batch is
wasted.

Both quantities come from squared gradient norms at two batch sizes measured on the same weights: the step's batch
of B examples is split into k micro-batches of b = B / k, and

    E|G_b|² = |G|² + tr(Σ)/b,   E|G_B|² = |G|² + tr(Σ)/B

where |G_b|² is averaged over the micro-batches and G_B is their mean. Solving gives unbiased estimates of |G|² and
tr(Σ); each is averaged over measurements (an exponential moving average) before the ratio is taken, as the paper
does: the ratio of two noisy estimates is biased, the ratio of their averages is not.

A network with batch normalisation has no per-example gradient: each micro-batch is normalised with its own
statistics (as "ghost batch norm" would), so the estimate is of the noise at micro-batch b, and it moves with b
(README measures by how much).
"""

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.results import NoiseScale, RunMetrics


def micro_batch_norms(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                      micro: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(mean over the micro-batches of |G_b|², |G_B|² of their mean, b, B) on the batch (x, y) split into `micro`
    micro-batches of b = len(x) // micro examples (the rest are left out: B = micro * b). Device tensors, no sync."""
    b = len(x) // micro
    params = [p for p in model.parameters() if p.requires_grad]
    total: torch.Tensor | None = None
    small = torch.zeros((), device=x.device)
    for xb, yb in zip(x[:micro * b].split(b), y[:micro * b].split(b), strict=True):
        grads = torch.autograd.grad(loss_fn(model(xb), yb), params, allow_unused=True)
        flat = torch.cat([g.reshape(-1) for g in grads if g is not None]).float()
        small = small + flat.square().sum()
        total = flat if total is None else total + flat
    assert total is not None, "at least one micro-batch"
    return small / micro, (total / micro).square().sum(), b, micro * b


def unbiased(small_sq: torch.Tensor, big_sq: torch.Tensor, b: int, big: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(|G|², tr(Σ)) from the squared gradient norms at batch sizes b < B (McCandlish et al. 2018, eq. A.2-A.3)."""
    grad_sq = (big * big_sq - b * small_sq) / (big - b)
    trace_cov = (small_sq - big_sq) / (1 / b - 1 / big)
    return grad_sq, trace_cov


def measure(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
            micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(|G|², tr(Σ)) on the batch (x, y) at the model's current weights. The model is left exactly as it was: BN's
    running statistics are put back and the random state (dropout) is forked, so training goes on as if nothing was
    measured."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            return unbiased(*micro_batch_norms(model, loss_fn, x, y, micro))
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def _ratio(trace_cov: torch.Tensor, grad_sq: torch.Tensor) -> torch.Tensor:
    """B_simple; NaN while the averaged |G|² is not yet positive (it is a difference of noisy terms)."""
    return torch.where(grad_sq > 0, trace_cov / grad_sq, torch.full_like(grad_sq, math.nan))


class GradientNoise(Instrument):
    """`noise/grad_sq`, `noise/trace_cov` (moving averages) and `noise/b_simple`, their ratio, every `every`-th step
    and the `last`, before the step trains; `noise/batch` beside it, the run's batch size, for the same chart. Each
    measurement takes a batch of its own from `draw(step)`, of the same size whatever the run's batch: the estimate's
    precision, and for BN the micro-batch it normalises with, are then the same across a batch sweep."""

    def __init__(self, model: nn.Module, loss_fn: Callable, draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                 every: int, micro: int, decay: float, batch: int, last: int):
        self.model, self.loss_fn, self.draw, self.every, self.last = model, loss_fn, draw, every, last
        self.micro, self.decay, self.batch = micro, decay, batch
        self.grad_sq: torch.Tensor | float = 0.0  # moving averages, not yet corrected for their start at zero
        self.trace_cov: torch.Tensor | float = 0.0
        self.count = 0  # measurements so far
        self.history: list[tuple[int, float]] = []  # (step, b_simple)
        self.latest: dict[str, float] = {}
        self.micro_batch = 0

    def before_step(self, step: int, x: torch.Tensor, y: torch.Tensor, readings: Readings) -> None:
        if step % self.every and step != self.last:  # the last step too: a short run gets its one value
            return
        x, y = self.draw(step)
        self.micro_batch = len(x) // self.micro
        grad_sq, trace_cov = measure(self.model, self.loss_fn, x, y, self.micro)
        self.grad_sq = self.decay * self.grad_sq + (1 - self.decay) * grad_sq
        self.trace_cov = self.decay * self.trace_cov + (1 - self.decay) * trace_cov
        self.count += 1
        start = 1 - self.decay ** self.count  # the averages' weight so far: dividing by it removes the start at zero
        readings.scalars.update({"noise/grad_sq": self.grad_sq / start, "noise/trace_cov": self.trace_cov / start,
                                 "noise/b_simple": _ratio(self.trace_cov, self.grad_sq),
                                 "noise/batch": float(self.batch)})

    def read_back(self, step: int, values: dict[str, float]) -> None:
        if "noise/b_simple" in values:
            self.latest = {key.partition("/")[2]: value for key, value in values.items() if key.startswith("noise/")}
            self.history.append((step, self.b_simple))

    @property
    def b_simple(self) -> float:
        """The ratio; NaN while the averaged |G|² is not yet positive (it is a difference of noisy terms)."""
        grad_sq, trace_cov = self.latest.get("grad_sq", math.nan), self.latest.get("trace_cov", math.nan)
        return trace_cov / grad_sq if grad_sq > 0 else math.nan

    def finish(self, metrics: RunMetrics) -> None:
        if self.latest:
            metrics.noise = NoiseScale(b_simple=self.b_simple, grad_sq=self.latest["grad_sq"],
                                       trace_cov=self.latest["trace_cov"], batch=self.batch,
                                       micro_batch=self.micro_batch, history=list(self.history))

    def state(self) -> dict[str, Any]:
        return {"grad_sq": float(self.grad_sq), "trace_cov": float(self.trace_cov), "count": self.count,
                "history": [list(point) for point in self.history], "latest": dict(self.latest),
                "micro_batch": self.micro_batch}

    def load_state(self, state: dict[str, Any]) -> None:
        self.grad_sq, self.trace_cov = state.get("grad_sq", 0.0), state.get("trace_cov", 0.0)
        self.count = state.get("count", 0)
        self.history = [tuple(point) for point in state.get("history", [])]
        self.latest = dict(state.get("latest", {}))
        self.micro_batch = state.get("micro_batch", 0)
