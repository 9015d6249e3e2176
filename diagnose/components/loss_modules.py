"""The loss modules the loss registry builds, each called as loss(logits, target) with logits (B, K)."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


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
