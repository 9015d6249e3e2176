"""A Monitor attached to a model and its optimizer from outside, so that the loop that trains them stays as it is:
`diagnose train`'s loop and a plain PyTorch loop are watched the same way.

The moments of a step come from hooks: the model's first forward pass in training mode with gradients on since the
last optimizer step starts a step (`before_step`, with the forward's inputs), the optimizer's step pre-hook is
`after_backward` (the gradients exist, the weights are still the old ones) and its post-hook `after_step`. Forward
passes in eval mode or without gradients (an evaluation) are not steps, and neither are the passes the instruments
make themselves. Nothing reads a value back to the host except on the steps that measure (the Monitor's flush).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from diagnose.diagnostics.monitor import Monitor
from diagnose.results import Evaluation, NonFinite


class Watch:
    """Calls `monitor` at the moments of each optimizer step of `model`; `step`: the steps done before (a resumed
    run's). `nonfinite` is the first NaN/Inf the instruments found, where and when. `clip` (`diagnose train`'s
    clip=) changes the gradients once they are measured: the instruments see them as the backward pass left them.
    A monitor given as `begin` is built from the inputs of the first step (a plain loop's layers are found by
    running the model on them); until then `monitor` is None."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, monitor: Monitor | None = None,
                 step: int = 0, clip: Callable[[Iterator[nn.Parameter]], None] | None = None,
                 begin: Callable[[torch.Tensor], Monitor] | None = None):
        assert (monitor is None) != (begin is None), "a monitor, or how to begin one"
        self.model, self.optimizer, self.monitor, self.clip, self.begin = model, optimizer, monitor, clip, begin
        self.step = step
        self.nonfinite: NonFinite | None = None
        self._begun = False  # the forward pass of step + 1 has begun
        self._quiet = 0  # > 0 while the hooks must not count: the instruments' own passes, a paused watch
        self._handles = [model.register_forward_pre_hook(self._forward),
                         optimizer.register_step_pre_hook(self._before_update),
                         optimizer.register_step_post_hook(self._after_update)]

    def _forward(self, module: nn.Module, args: tuple) -> None:
        if self._quiet or self._begun or not module.training or not torch.is_grad_enabled():
            return
        self._begun = True
        x = args[0] if args else None
        device = x.device if isinstance(x, torch.Tensor) else next(module.parameters()).device
        # the instruments' own passes (the noise scale, the curvature) in full precision, outside the loop's autocast
        with self.quiet(), torch.autocast(device.type, enabled=False):
            if self.monitor is None:
                self.monitor = self.begin(x)
            self.monitor.before_step(self.step + 1, x)

    def _before_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._quiet or self.monitor is None:  # None: a step without a forward pass in training mode
            return
        with self.quiet():
            self.monitor.after_backward(self.step + 1)
        if self.clip is not None:
            self.clip(self.model.parameters())

    def _after_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._quiet or self.monitor is None:
            return
        self.step, self._begun = self.step + 1, False
        with self.quiet():
            found = self.monitor.after_step(self.step)
        self.nonfinite = self.nonfinite or found

    def on_evaluation(self, evaluation: Evaluation) -> None:
        """After a validation pass of the loop's own (`diagnose train`'s): what the instruments measure then."""
        if self.monitor is not None:
            with self.quiet():
                self.monitor.on_evaluation(evaluation)

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """The model and optimizer run without being watched: the instruments' own passes, a replay of steps."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def detach(self) -> None:
        """Remove every hook, the instruments' too; the model and optimizer are as they were."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.monitor is not None:
            self.monitor.close()
