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
from diagnose.models.modes import leaves_no_trace
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
    with leaves_no_trace(model, x.device):
        return unbiased(*micro_batch_norms(model, loss_fn, x, y, micro))


RESOLVED = 2.0  # |G|² counts as measured when its average is this many standard errors above zero


class GradientNoise(Instrument):
    """`noise/grad_sq`, `noise/trace_cov` (moving averages) and `noise/b_simple`, their ratio, every `every`-th step
    and the `last`, before the step trains; `noise/batch` beside it, the run's batch size, for the same chart. Each
    measurement takes a batch of its own from `draw(step)`, of the same size whatever the run's batch: the estimate's
    precision, and for BN the micro-batch it normalises with, are then the same across a batch sweep.

    |G|² is the hard part: each measurement's estimate carries noise of order tr(Σ)/noise_batch, larger than |G|²
    itself wherever B_simple exceeds the measured batch. So the spread of the measurements is tracked too, and
    B_simple is given only once the averaged |G|² stands RESOLVED standard errors above zero; until then
    `noise/b_simple_low`, the ratio with |G|² at its upper bound, says how large B_simple at least is."""

    def __init__(self, model: nn.Module, loss_fn: Callable, draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                 every: int, micro: int, decay: float, batch: int, last: int):
        self.model, self.loss_fn, self.draw, self.every, self.last = model, loss_fn, draw, every, last
        self.micro, self.decay, self.batch = micro, decay, batch
        # moving averages, not yet corrected for their start at zero: of (|G|², tr(Σ)) over the measurements, and of
        # half the squared change of |G|² between successive ones (its variance, blind to the slow drift of training)
        self.sums: torch.Tensor | None = None
        self.spread: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None
        self.count = 0  # measurements so far
        self.history: list[tuple[int, float, float]] = []  # (step, b_simple, b_simple_low)
        self.latest: dict[str, float] = {}
        self.micro_batch = 0

    def before_step(self, step: int, x: torch.Tensor, y: torch.Tensor, readings: Readings) -> None:
        if step % self.every and step != self.last:  # the last step too: a short run gets its one value
            return
        x, y = self.draw(step)
        self.micro_batch = len(x) // self.micro
        grad_sq, trace_cov = measure(self.model, self.loss_fn, x, y, self.micro)
        self.sums = _average(self.sums, torch.stack([grad_sq, trace_cov]), self.decay)
        if self.previous is not None:
            self.spread = _average(self.spread, (grad_sq - self.previous).square() / 2, self.decay)
        self.previous = grad_sq
        self.count += 1
        readings.scalars.update(self._estimates())

    def _estimates(self) -> dict[str, torch.Tensor | float]:
        """The corrected averages, B_simple and its lower bound: device tensors."""
        grad_sq, trace_cov = self.sums / (1 - self.decay ** self.count)
        if self.spread is None:  # one measurement: no error estimate yet
            error = torch.full_like(grad_sq, math.inf)
        else:
            variance = self.spread / (1 - self.decay ** (self.count - 1))
            error = (variance / _effective(self.decay, self.count)).sqrt()
        nan = torch.full_like(grad_sq, math.nan)
        upper = grad_sq + RESOLVED * error
        return {"noise/grad_sq": grad_sq, "noise/trace_cov": trace_cov,
                "noise/b_simple": torch.where(grad_sq > RESOLVED * error, trace_cov / grad_sq, nan),
                "noise/b_simple_low": torch.where(upper.isfinite() & (upper > 0), trace_cov / upper, nan),
                "noise/batch": float(self.batch)}

    def read_back(self, step: int, values: dict[str, float]) -> None:
        if "noise/b_simple" in values:
            self.latest = {key.partition("/")[2]: value for key, value in values.items() if key.startswith("noise/")}
            self.history.append((step, self.latest["b_simple"], self.latest["b_simple_low"]))

    def finish(self, metrics: RunMetrics) -> None:
        if self.latest:
            metrics.noise = NoiseScale(b_simple=self.latest["b_simple"], b_simple_low=self.latest["b_simple_low"],
                                       grad_sq=self.latest["grad_sq"], trace_cov=self.latest["trace_cov"],
                                       batch=self.batch, micro_batch=self.micro_batch, history=list(self.history))

    def state(self) -> dict[str, Any]:
        def plain(t: torch.Tensor | None) -> Any:
            return None if t is None else t.tolist()

        return {"sums": plain(self.sums), "spread": plain(self.spread), "previous": plain(self.previous),
                "count": self.count, "history": [list(point) for point in self.history], "latest": dict(self.latest),
                "micro_batch": self.micro_batch}

    def load_state(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device

        def tensor(value: Any) -> torch.Tensor | None:
            return None if value is None else torch.tensor(value, device=device)

        self.sums, self.spread = tensor(state.get("sums")), tensor(state.get("spread"))
        self.previous = tensor(state.get("previous"))
        self.count = state.get("count", 0)
        self.history = [tuple(point) for point in state.get("history", [])]
        self.latest = dict(state.get("latest", {}))
        self.micro_batch = state.get("micro_batch", 0)


def _average(average: torch.Tensor | None, value: torch.Tensor, decay: float) -> torch.Tensor:
    """One step of an exponential moving average that starts at zero."""
    return (1 - decay) * value if average is None else decay * average + (1 - decay) * value


def _effective(decay: float, count: int) -> float:
    """How many independent measurements `count` exponentially weighted ones are worth: (Σw)² / Σw²."""
    return (1 - decay ** count) ** 2 * (1 - decay ** 2) / ((1 - decay) ** 2 * (1 - decay ** (2 * count)))
