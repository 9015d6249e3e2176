"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", appendix A):
B_simple = tr(Σ) / |G|², the per-example gradient covariance's trace over the squared true gradient. It predicts
the critical batch size: below it a larger batch needs proportionally fewer steps, above it most of each batch is
wasted.

A measurement takes batches of training examples at one step's weights and splits each into micro-batches of b
examples. With g_i the gradients of the n micro-batches so far and S their sum,

    |G|² ≈ Σ_{i≠j} g_i·g_j / n(n-1) = (|S|² - Σ|g_i|²) / n(n-1),   tr(Σ) ≈ b (Σ|g_i|² / n - |G|²)

both unbiased: the paper's estimates from |G_b|² and |G_B|² (eq. A.2-A.3), written per pair of micro-batches. Each
measurement stands alone: nothing is averaged over steps, whose weights differ (an average over earlier, larger
|G|² made B_simple depend on how often it was measured). Its standard errors come from the measurement itself: the
micro-batches are dealt into GROUPS groups, and the spread between the groups' means gives them.

|G|² is the hard part: its noise is of order tr(Σ)/B for B examples, larger than |G|² itself wherever B_simple
exceeds B. So a measurement draws batches until |G|² stands PRECISE standard errors above zero, up to a cap; B_simple
is given where |G|² stands RESOLVED standard errors above zero, and otherwise only its lower bound.

A network with batch normalisation has no per-example gradient: each micro-batch is normalised with its own
statistics (as "ghost batch norm" would), so the estimate is of the noise at micro-batch b, and it moves with b
(README measures by how much).
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.models.modes import leaves_no_trace
from diagnose.results import NoiseScale, RunMetrics

# the micro-batches are dealt into this many groups, the spread between them gives the errors: (GROUPS, P) floats
# kept while measuring, 86 MB for the MLP. With 16 the error of |G|² was itself noisier, and the lower bound of
# B_simple exceeded the exact value in 8 of 100 measurements of a small MLP (64 groups: 1)
GROUPS = 64
RESOLVED = 2.0  # B_simple is given where |G|² stands this many standard errors above zero, else its lower bound
# a measurement draws more batches until |G|² stands this many standard errors above zero (B_simple known to about a
# quarter) or it reaches the cap. Stopping at the first batch that looks resolved favours lucky draws: on the
# Fashion-MNIST MLP at the end of an epoch (B_simple ~10,000; 100 measurements, 16 groups) stopping at 3 standard
# errors overstated |G|² by 12 %, and B_simple's errors were 2x the stated ones; at 4 it was within 1-2 % and
# B_simple's errors as stated, as with a fixed number of batches
PRECISE = 4.0


@dataclass(frozen=True)
class Estimate:
    """One measurement at one step's weights, with its standard errors."""

    grad_sq: float  # |G|²
    grad_sq_error: float
    trace_cov: float  # tr(Σ)
    trace_cov_error: float
    examples: int  # drawn for it
    micro_batch: int  # b, the examples of a micro-batch

    @property
    def resolved(self) -> bool:
        """|G|² stands out of its noise."""
        return self.grad_sq > RESOLVED * self.grad_sq_error

    @property
    def b_simple(self) -> float:
        """tr(Σ)/|G|², NaN where |G|² is not resolved."""
        return self.trace_cov / self.grad_sq if self.resolved else math.nan

    @property
    def b_simple_low(self) -> float:
        """B_simple is at least this: |G|² at its upper bound, RESOLVED standard errors up."""
        upper = self.grad_sq + RESOLVED * self.grad_sq_error
        return self.trace_cov / upper if upper > 0 else math.nan

    @property
    def b_simple_error(self) -> float:
        """B_simple's standard error (the delta method: relative errors add in quadrature), NaN where it is."""
        if not self.resolved or self.trace_cov <= 0:
            return math.nan
        return self.b_simple * math.hypot(self.grad_sq_error / self.grad_sq, self.trace_cov_error / self.trace_cov)


def micro_batch_gradients(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                          micro: int) -> Iterator[torch.Tensor]:
    """The flat gradient (P,) of each of the `micro` micro-batches of b = len(x) // micro examples (the rest are
    left out)."""
    b = len(x) // micro
    params = [p for p in model.parameters() if p.requires_grad]
    for xb, yb in zip(x[:micro * b].split(b), y[:micro * b].split(b), strict=True):
        grads = torch.autograd.grad(loss_fn(model(xb), yb), params, allow_unused=True)
        yield torch.cat([g.reshape(-1) for g in grads if g is not None]).float()


class GroupSums:
    """The micro-batch gradients of one measurement, dealt in turn into `groups` groups: each group's sum of them
    (groups, P) on the device, of their squared norms and their count. Their sizes differ by one at most."""

    def __init__(self, groups: int):
        self.groups = groups
        self.sums: torch.Tensor | None = None
        self.squares = torch.zeros(groups, dtype=torch.float64)
        self.counts = torch.zeros(groups, dtype=torch.float64)
        self.micro_batch = self.examples = 0

    def add(self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, micro: int) -> None:
        """The micro-batches of the batch (x, y)."""
        self.micro_batch = len(x) // micro
        groups = (torch.arange(micro) + int(self.counts.sum())) % self.groups  # dealt on from the last batch's
        squares = []
        for group, flat in zip(groups.tolist(), micro_batch_gradients(model, loss_fn, x, y, micro), strict=True):
            if self.sums is None:
                self.sums = torch.zeros(self.groups, len(flat), device=flat.device)
            self.sums[group].add_(flat)
            squares.append(torch.dot(flat, flat))
        self.squares.index_add_(0, groups, torch.stack(squares).double().cpu())  # one host transfer a batch
        self.counts.index_add_(0, groups, torch.ones(micro, dtype=torch.float64))
        self.examples += micro * self.micro_batch

    def estimate(self) -> Estimate:
        assert self.sums is not None, "at least one batch"
        # (groups, groups); float32 products are enough: on the MLP at B_simple ~10,000 |G|² came out the same as
        # from float64 ones to 3e-7, in a ninth of the time (0.03 s, where a batch of 4096 takes 0.16 s)
        gram = (self.sums @ self.sums.T).double().cpu()
        n = self.counts.sum()
        grad_sq = (gram.sum() - self.squares.sum()) / (n * (n - 1))
        mean_square = self.squares / self.counts  # (groups,): each group's mean |g_i|²
        return Estimate(grad_sq=grad_sq.item(), grad_sq_error=pair_mean_error(gram / self.counts.outer(self.counts)),
                        trace_cov=self.micro_batch * (self.squares.sum() / n - grad_sq).item(),
                        trace_cov_error=self.micro_batch * (mean_square.std() / math.sqrt(self.groups)).item(),
                        examples=self.examples, micro_batch=self.micro_batch)


def pair_mean_error(gram: torch.Tensor) -> float:
    """The standard error of the mean dot product of distinct vectors, Σ_{a≠c} h_a·h_c / m(m-1), an unbiased
    estimate of |E h|², over m >= 4 independent, identically distributed vectors h_a, from their Gram matrix (m, m).

    It is a U-statistic, so its variance is (4(m-2) ζ1 + 2 ζ2) / m(m-1) (Hoeffding 1948), with ζ1 = Cov(h_a·h_c,
    h_a·h_d) and ζ2 = Var(h_a·h_c); both are estimated without bias from means of products over distinct indices.
    The jackknife, the usual way, counts the ζ2 term twice: it overstated the error by 1.3x where |G|² is small."""
    m = len(gram)
    off = gram - torch.diag(torch.diag(gram))
    total, rows, squares = off.sum(), off.sum(dim=1), off.square().sum()
    # the sums over distinct index pairs, triples and quadruples, from those over all of them
    square_mean = squares / (m * (m - 1))  # E (h_a·h_c)²
    shared_mean = (rows.square().sum() - squares) / (m * (m - 1) * (m - 2))  # E (h_a·h_c)(h_a·h_d)
    apart_mean = (total ** 2 - 4 * rows.square().sum() + 2 * squares) / (m * (m - 1) * (m - 2) * (m - 3))  # |E h|⁴
    zeta1 = max((shared_mean - apart_mean).item(), 0.0)  # estimates of variances can come out below zero
    zeta2 = max((square_mean - apart_mean).item(), 0.0)
    return math.sqrt((4 * (m - 2) * zeta1 + 2 * zeta2) / (m * (m - 1)))


def measure(model: nn.Module, loss_fn: Callable, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], micro: int,
            most: int = 1) -> Estimate:
    """|G|² and tr(Σ) at the model's current weights from batches of `batches`, each split into `micro`
    micro-batches: until |G|² stands PRECISE standard errors above zero, `most` batches at most. The model is left
    exactly as it was: BN's running statistics are put back and the random state (dropout) is forked, so training
    goes on as if nothing was measured."""
    sums = GroupSums(min(GROUPS, micro))
    with leaves_no_trace(model, next(model.parameters()).device):
        for _ in range(most):
            sums.add(model, loss_fn, *next(batches), micro)
            estimate = sums.estimate()
            if estimate.grad_sq >= PRECISE * estimate.grad_sq_error:
                break
    return estimate


class GradientNoise(Instrument):
    """`noise/b_simple`, its standard error `noise/b_simple_error` and lower bound `noise/b_simple_low`, and
    `noise/grad_sq`, `noise/trace_cov`, every `every`-th step and the `last`, before the step trains, each measured
    at that step's weights; `noise/examples`, how many it drew, and `noise/batch`, the run's batch size, for the same
    chart. `draws(step)` gives the step's batches, of the same size whatever the run's batch: the estimate's
    precision, and for BN the micro-batch it normalises with, are then the same across a batch sweep."""

    def __init__(self, model: nn.Module, loss_fn: Callable,
                 draws: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]], every: int, micro: int,
                 most: int, batch: int, last: int):
        self.model, self.loss_fn, self.draws, self.every, self.last = model, loss_fn, draws, every, last
        self.micro, self.most, self.batch = micro, most, batch
        self.history: list[tuple[int, float, float]] = []  # (step, b_simple, b_simple_low)
        self.latest: Estimate | None = None

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        if step % self.every and step != self.last:  # the last step too: a short run gets its one value
            return
        self.latest = now = measure(self.model, self.loss_fn, self.draws(step), self.micro, self.most)
        self.history.append((step, now.b_simple, now.b_simple_low))
        readings.scalars.update({"noise/b_simple": now.b_simple, "noise/b_simple_error": now.b_simple_error,
                                 "noise/b_simple_low": now.b_simple_low, "noise/grad_sq": now.grad_sq,
                                 "noise/trace_cov": now.trace_cov, "noise/examples": float(now.examples),
                                 "noise/batch": float(self.batch)})

    def finish(self, metrics: RunMetrics) -> None:
        if self.latest is not None:
            now = self.latest
            metrics.noise = NoiseScale(b_simple=now.b_simple, b_simple_low=now.b_simple_low, grad_sq=now.grad_sq,
                                       trace_cov=now.trace_cov, batch=self.batch, micro_batch=now.micro_batch,
                                       history=list(self.history), b_simple_error=now.b_simple_error,
                                       grad_sq_error=now.grad_sq_error, trace_cov_error=now.trace_cov_error,
                                       examples=now.examples)

    def state(self) -> dict[str, Any]:
        return {"history": [list(point) for point in self.history],
                "latest": None if self.latest is None else asdict(self.latest)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history = [tuple(point) for point in state.get("history", [])]
        # a checkpoint from before each measurement stood alone keeps moving averages instead: its last value is
        # left out, the next measurement gives one
        latest = state.get("latest")
        self.latest = Estimate(**latest) if latest and "examples" in latest else None
