"""Optimizers, learning-rate schedules and the batch-size lr rule."""

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from diagnose.components.norms import clamp_gates_, gates
from diagnose.registry import lookup

# Each takes (params, lr, fused, **options). `fused` picks torch's fused update (on the CPU a kernel per
# parameter, on CUDA one launch for many) over a few dispatched ops per parameter: the same arithmetic, and
# on the CPU at MLP batch 8 an optimizer step of 86 us instead of 233 us (of a ~1 ms training step).
# torch >= 2.4 has these kernels for the CPU and CUDA (and mps, left out here: untested).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, fused, weight_decay=0.0, momentum=0.9, nesterov=False: torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, fused=fused
    ),
    "adam": lambda params, lr, fused, weight_decay=0.0, betas=(0.9, 0.999): torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused
    ),
    "adamw": lambda params, lr, fused, weight_decay=0.01, betas=(0.9, 0.999): torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused
    ),
}
FUSED_DEVICES = ("cpu", "cuda")

# Exponent p of lr = base_lr * (batch / base_batch)^p.
LR_SCALING: dict[str, float] = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def scaled_lr(lr: float, batch: int, base_batch: int, rule: str) -> float:
    """The linear rule (Goyal et al. 2017) keeps the update per example constant across batch sizes."""
    return lr * (batch / base_batch) ** lookup(LR_SCALING, rule, "optim.lr_scaling")


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """All parameters at `lr`, except Batch-Instance Norm gates: 10x lr, no weight decay (Nam & Kim 2018)."""
    rhos = gates(model)
    gate_ids = {id(p) for p in rhos}
    rest = [p for p in model.parameters() if id(p) not in gate_ids]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if rhos:
        groups.append({"params": rhos, "lr": 10 * lr, "weight_decay": 0.0})
    return groups


def clamp_gates_after_each_step(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Batch-Instance Norm gates go back into [0, 1] after every step of `optimizer`, whoever calls it."""
    rhos = gates(model)
    if rhos:
        optimizer.register_step_post_hook(lambda *_: clamp_gates_(rhos))


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


def step_schedule(milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> Callable[[float], float]:
    """Multiply the lr by gamma at each milestone (a fraction of the whole run)."""
    return lambda progress: gamma ** sum(progress >= m for m in milestones)


# Each maps training progress in [0, 1] to a multiplier of the initial lr.
SCHEDULES: dict[str, Callable[..., Callable[[float], float]]] = {
    "constant": lambda: _constant,
    "cosine": lambda: _cosine,
    "step": step_schedule,
}


def lr_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Callable[[float], float], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(step / total_steps))


def _clip_by_value(params: list[nn.Parameter], max: float) -> None:
    nn.utils.clip_grad_value_(params, max)


def _clip_by_norm(params: list[nn.Parameter], max: float) -> None:
    # the returned total norm is not read, so there is no host sync (torch picks foreach kernels where it can)
    nn.utils.clip_grad_norm_(params, max)


# Gradient clipping, applied between backward and the optimizer step.
CLIPS: dict[str, Callable[..., None] | None] = {
    "none": None,
    "value": _clip_by_value,  # each gradient entry into [-max, max]: changes the direction
    "norm": _clip_by_norm,  # rescale the whole gradient to norm <= max: keeps the direction
}
