"""Loss functions by short name: each entry builds a module (components/loss_modules.py) called as
loss(logits, target) with logits (B, K)."""

from dataclasses import dataclass
from typing import Any

from diagnose import checks
from diagnose.lazy import later
from diagnose.registry import Component, Options

F, modules = later("torch.nn.functional"), later("diagnose.components.loss_modules")  # imported when a loss is built


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


# Each `make(**settings)` builds a module called as loss(logits, target).
LOSSES: dict[str, Component] = {
    "ce": Component(make=lambda weight, label_smoothing: modules.CrossEntropy(weight, label_smoothing),
                    options=CrossEntropyOptions),
    "nll": Component(make=lambda weight: modules.NLL(weight), options=WeightedOptions),
    "mse": Component(make=lambda: modules.ProbabilityRegression(F.mse_loss)),
    "l1": Component(make=lambda: modules.ProbabilityRegression(F.l1_loss)),
    "smooth_l1": Component(make=lambda beta: modules.ProbabilityRegression(F.smooth_l1_loss, beta=beta),
                           options=SmoothL1Options),
    "focal": Component(make=lambda gamma, alpha: modules.Focal(gamma, alpha), options=FocalOptions),
    "kl": Component(make=lambda label_smoothing: modules.KLDivergence(label_smoothing), options=KLOptions),
    "margin": Component(make=lambda margin: modules.PairwiseMargin(margin), options=MarginOptions),
}
