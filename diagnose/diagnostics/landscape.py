"""Loss-landscape smoothness along the gradient (Santurkar et al. 2018, "How does batch normalization help
optimization?"): how much the loss and its gradient change when stepping along the gradient direction."""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.models.modes import untouched_random_state

STEP_MULTIPLES = (0.5, 1.0, 2.0, 4.0)  # step lengths eta, as multiples of the learning rate


def _norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def landscape(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, lr: float,
              multiples: Sequence[float] = STEP_MULTIPLES) -> dict[str, torch.Tensor]:
    """From the current weights w with gradient g on the batch (x, y), evaluate w' = w - eta g for each eta:

    - landscape/loss_range: max - min of L(w') (the variation of the loss along the step)
    - landscape/grad_change_range: max - min of ||grad L(w) - grad L(w')|| (gradient predictiveness)
    - landscape/beta: max of ||grad L(w) - grad L(w')|| / ||eta g|| (effective beta-smoothness)

    Weights, buffers (BN running statistics) and the random state are restored exactly afterwards, so
    training goes on as if nothing was measured.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [p.detach().clone() for p in params]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    # dropout draws from the CPU generator or the input's CUDA one: fork both so training's stream is untouched
    with untouched_random_state(x.device):
        return _measure(model, loss_fn, x, y, lr, multiples, params, weights, buffers)


def _measure(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, lr: float,
             multiples: Sequence[float], params: list[nn.Parameter], weights: list[torch.Tensor],
             buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        grads = torch.autograd.grad(loss_fn(model(x), y), params)
        grad_norm = _norm(grads)
        losses, changes, betas = [], [], []
        for multiple in multiples:
            eta = multiple * lr
            with torch.no_grad():
                for p, w, g in zip(params, weights, grads, strict=True):
                    p.copy_(w - eta * g)
            loss = loss_fn(model(x), y)
            moved = torch.autograd.grad(loss, params)
            change = _norm([a - b for a, b in zip(moved, grads, strict=True)])
            losses.append(loss.detach())
            changes.append(change)
            betas.append(change / (eta * grad_norm).clamp(min=1e-12))
    finally:
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    losses_t, changes_t = torch.stack(losses), torch.stack(changes)
    return {
        "landscape/loss_range": losses_t.max() - losses_t.min(),
        "landscape/grad_change_range": changes_t.max() - changes_t.min(),
        "landscape/beta": torch.stack(betas).max(),
    }


class Landscape(Instrument):
    """`landscape` every `every`-th step, before the step trains, at the lr of that step, on `batch(step)` (in
    `diagnose train`, the step's own batch)."""

    def __init__(self, model: nn.Module, loss_fn: Callable, lr: Callable[[], float], every: int,
                 batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]]):
        self.model, self.loss_fn, self.lr, self.every, self.batch = model, loss_fn, lr, every, batch

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        if step % self.every == 0:
            readings.scalars.update(landscape(self.model, self.loss_fn, *self.batch(step), self.lr()))
