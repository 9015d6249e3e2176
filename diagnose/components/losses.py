"""Loss functions by short name; each is a module called as loss(logits, target) with logits (B, K)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diagnose import checks
from diagnose.registry import Component, Options


@dataclass
class WeightedOptions(Options):
    weight: list[float] | None = None  # one weight per class, or null

    def __post_init__(self) -> None:
        for weight in self.weight or []:
            checks.at_least("each of loss.weight", weight, 0)


@dataclass
class CrossEntropyOptions(WeightedOptions):
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.between("loss.label_smoothing", self.label_smoothing, 0, 1)


@dataclass
class SmoothL1Options(Options):
    beta: float = 1.0  # below this distance the loss is quadratic, above it linear

    def __post_init__(self) -> None:
        checks.at_least("loss.beta", self.beta, 0)


@dataclass
class FocalOptions(Options):
    gamma: float = 2.0  # 0 gives cross-entropy
    alpha: Any = None  # null, one number, or one weight per class

    def __post_init__(self) -> None:
        checks.at_least("loss.gamma", self.gamma, 0)
        for weight in self.alpha if isinstance(self.alpha, list) else [] if self.alpha is None else [self.alpha]:
            checks.at_least("loss.alpha (null, one number, or one weight per class)", weight, 0)


@dataclass
class KLOptions(Options):
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        checks.between("loss.label_smoothing", self.label_smoothing, 0, 1)


@dataclass
class MarginOptions(Options):
    margin: float = 1.0  # the true-class score should beat every other score by this much


def _class_weights(weight: Sequence[float] | None) -> torch.Tensor | None:
    return None if weight is None else torch.tensor(list(weight), dtype=torch.float32)


class CrossEntropy(nn.CrossEntropyLoss):
    def __init__(self, weight: Sequence[float] | None, label_smoothing: float):
        super().__init__(weight=_class_weights(weight), label_smoothing=label_smoothing)


class NLL(nn.Module):
    """Negative log-likelihood of log-softmax probabilities (the model's head gives logits)."""

    def __init__(self, weight: Sequence[float] | None):
        super().__init__()
        self.register_buffer("weight", _class_weights(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=1), target, weight=self.weight)


class ProbabilityRegression(nn.Module):
    """A regression loss between softmax probabilities and the one-hot target (MSE/L1/smooth-L1 as
    classification losses: their gradient vanishes when the softmax saturates)."""

    def __init__(self, distance: Callable[..., torch.Tensor], **options: float):
        super().__init__()
        self.distance = distance
        self.options = options

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=1)
        one_hot = F.one_hot(target, logits.shape[1]).to(probs.dtype)
        return self.distance(probs, one_hot, **self.options)


class Focal(nn.Module):
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t; gamma=0 and no alpha is cross-entropy.

    alpha: None, one number (the paper's balancing factor, applied to every class), or one weight per class.
    """

    def __init__(self, gamma: float, alpha: float | Sequence[float] | None = None):
        super().__init__()
        self.gamma = gamma
        alpha_tensor = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", alpha_tensor)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p_t = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)  # (B,)
        loss = -((1 - log_p_t.exp()) ** self.gamma) * log_p_t
        if self.alpha is not None:
            loss = loss * (self.alpha[target] if self.alpha.dim() else self.alpha)
        return loss.mean()


class KLDivergence(nn.Module):
    """KL(q || p) from the label-smoothed target distribution q to the softmax p."""

    def __init__(self, label_smoothing: float):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        q = F.one_hot(target, n_classes).float() * (1 - self.label_smoothing) + self.label_smoothing / n_classes
        return F.kl_div(F.log_softmax(logits, dim=1), q, reduction="batchmean")


class PairwiseMargin(nn.Module):
    """Ranking loss: the true-class score should beat every other score by `margin`.

    Sum over wrong classes j of max(0, margin - (s_y - s_j)), averaged over the batch.
    """

    def __init__(self, margin: float):
        super().__init__()
        self.margin = margin

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        true_score = logits.gather(1, target[:, None])  # (B, 1)
        violations = F.relu(self.margin - (true_score - logits))  # (B, K)
        violations = violations.scatter(1, target[:, None], 0.0)  # the true class does not compete with itself
        return violations.sum(dim=1).mean()


# Each `make(**settings)` builds a module called as loss(logits, target).
LOSSES: dict[str, Component] = {
    "ce": Component(make=CrossEntropy, options=CrossEntropyOptions),
    "nll": Component(make=NLL, options=WeightedOptions),
    "mse": Component(make=lambda: ProbabilityRegression(F.mse_loss)),
    "l1": Component(make=lambda: ProbabilityRegression(F.l1_loss)),
    "smooth_l1": Component(make=lambda beta: ProbabilityRegression(F.smooth_l1_loss, beta=beta),
                           options=SmoothL1Options),
    "focal": Component(make=Focal, options=FocalOptions),
    "kl": Component(make=KLDivergence, options=KLOptions),
    "margin": Component(make=PairwiseMargin, options=MarginOptions),
}
