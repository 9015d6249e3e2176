"""Optimizers, learning-rate schedules and the batch-size lr rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from diagnose import checks
from diagnose.errors import UserError
from diagnose.lazy import later
from diagnose.registry import Component, Options, lookup, settings

torch, nn = later("torch"), later("torch.nn")  # imported when an optimizer is built
layers = later("diagnose.components.layers")


@dataclass
class OptimOptions(Options):
    weight_decay: float = 0.0  # L2 penalty added to the gradient (adamw: decoupled decay)
    lr_scaling: str = "linear"  # none | linear | sqrt: lr * (batch / base_batch)^{0, 1, 1/2} (Goyal et al. 2017)
    base_batch: int = 128  # the batch size at which `lr` is the learning rate

    def __post_init__(self) -> None:
        checks.at_least("optim.weight_decay", self.weight_decay, 0)
        checks.one_of("optim.lr_scaling", self.lr_scaling, LR_SCALING)
        checks.whole("optim.base_batch", self.base_batch)


@dataclass
class SGDOptions(OptimOptions):
    weight_decay: float = 5.0e-4
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.between("optim.momentum", self.momentum, 0, 1, high_open=True)  # 1 or more: the updates never decay
        if self.nesterov and self.momentum == 0:
            raise UserError("optim.nesterov=true needs optim.momentum > 0: Nesterov's look-ahead is along the "
                            "momentum. Set optim.momentum (e.g. 0.9) or optim.nesterov=false.")


@dataclass
class AdamOptions(OptimOptions):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # decay of the gradient's 1st, 2nd moments

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.betas) != 2:
            raise UserError(f"optim.betas must be two numbers, e.g. [0.9,0.999]; got {self.betas}.")
        for beta in self.betas:
            checks.between("each of optim.betas", beta, 0, 1, high_open=True)


@dataclass
class AdamWOptions(AdamOptions):
    weight_decay: float = 0.01  # decoupled weight decay (Loshchilov & Hutter)


# Each `make(params, lr, fused, **own settings)`. `fused` picks torch's fused update (on the CPU a kernel per
# parameter, on CUDA one launch for many) over a few dispatched ops per parameter: the same arithmetic, and
# on the CPU at MLP batch 8 an optimizer step of 86 us instead of 233 us (of a ~1 ms training step).
# torch >= 2.4 has these kernels for the CPU and CUDA (and mps, left out here: untested).
OPTIMIZERS: dict[str, Component] = {
    "sgd": Component(options=SGDOptions, make=lambda params, lr, fused, momentum, nesterov: torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, fused=fused)),
    "adam": Component(options=AdamOptions, make=lambda params, lr, fused, betas: torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), fused=fused)),
    "adamw": Component(options=AdamWOptions, make=lambda params, lr, fused, betas: torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), fused=fused)),
}
FUSED_DEVICES = ("cpu", "cuda")

# Exponent p of lr = base_lr * (batch / base_batch)^p.
LR_SCALING: dict[str, float] = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def scaled_lr(lr: float, batch: int, base_batch: int, rule: str) -> float:
    """The linear rule (Goyal et al. 2017) keeps the update per example constant across batch sizes."""
    return lr * (batch / base_batch) ** lookup(LR_SCALING, rule, "optim.lr_scaling")


def make_optimizer(options: OptimOptions, model: nn.Module, lr: float, fused: bool | None) -> torch.optim.Optimizer:
    """The optimizer `options` picks, over `model`'s parameter groups at `lr` (weight decay set per group)."""
    entry = lookup(OPTIMIZERS, options.name, "optim")
    shared = {f.name for f in fields(OptimOptions)}
    own = {key: value for key, value in settings(options).items() if key not in shared}
    return entry.make(param_groups(model, lr, options.weight_decay), lr, fused, **own)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """All parameters at `lr`, except Batch-Instance Norm gates: 10x lr, no weight decay (Nam & Kim 2018)."""
    rhos = layers.gates(model)
    gate_ids = {id(p) for p in rhos}
    rest = [p for p in model.parameters() if id(p) not in gate_ids]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if rhos:
        groups.append({"params": rhos, "lr": 10 * lr, "weight_decay": 0.0})
    return groups


def clamp_gates_after_each_step(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Batch-Instance Norm gates go back into [0, 1] after every step of `optimizer`, whoever calls it."""
    rhos = layers.gates(model)
    if rhos:
        optimizer.register_step_post_hook(lambda *_: layers.clamp_gates_(rhos))


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepOptions(Options):
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the run where lr *= gamma
    gamma: float = 0.1

    def __post_init__(self) -> None:
        for milestone in self.milestones:
            checks.between("each of schedule.milestones", milestone, 0, 1)
        checks.positive("schedule.gamma", self.gamma)


def step_schedule(milestones: Sequence[float], gamma: float) -> Callable[[float], float]:
    """Multiply the lr by gamma at each milestone (a fraction of the whole run)."""
    return lambda progress: gamma ** sum(progress >= m for m in milestones)


# Each `make(**settings)` maps training progress in [0, 1] to a multiplier of the initial lr.
SCHEDULES: dict[str, Component] = {
    "constant": Component(make=lambda: _constant),
    "cosine": Component(make=lambda: _cosine),
    "step": Component(make=step_schedule, options=StepOptions),
}


def lr_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Callable[[float], float], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(step / total_steps))


@dataclass
class ClipOptions(Options):
    max: float | None = 1.0  # clip=none ignores it; there so that a sweep clip=none,norm clip.max=1 composes

    def __post_init__(self) -> None:
        if self.name != "none":
            checks.positive("clip.max", self.max)


def _clip_by_value(params: list[nn.Parameter], max: float) -> None:
    nn.utils.clip_grad_value_(params, max)


def _clip_by_norm(params: list[nn.Parameter], max: float) -> None:
    # the returned total norm is not read, so there is no host sync (torch picks foreach kernels where it can)
    nn.utils.clip_grad_norm_(params, max)


# Gradient clipping, applied between backward and the optimizer step: `make(params, max)`.
CLIPS: dict[str, Component] = {
    "none": Component(make=None, options=ClipOptions),
    "value": Component(make=_clip_by_value, options=ClipOptions),  # each entry into [-max, max]: turns the gradient
    "norm": Component(make=_clip_by_norm, options=ClipOptions),  # rescale the whole gradient to norm <= max
}
