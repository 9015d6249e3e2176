"""Noticing a divergence and naming where it began: a copy of the last state known to be finite, and a replay from
it that measures every layer at every step."""

from collections.abc import Callable
from typing import Any

import torch

from diagnose.build import Run
from diagnose.diagnostics.instruments import for_replay
from diagnose.diagnostics.watch import Watch
from diagnose.results import NonFinite
from diagnose.training.batches import batch_indices, training_batch
from diagnose.training.state import capture, restore
from diagnose.training.window import first_nonfinite

# The state a divergence is replayed from is saved every this many log windows (checked finite at each):
# a copy costs little, but on a tiny, fast model every window would be a few percent of the run.
SNAPSHOT_WINDOWS = 4

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LastGood:
    """The last state known to be finite (None when `diag.locate_nonfinite` is off), to replay a divergence from
    and to save in place of weights that blew up."""

    def __init__(self, run: Run, generator: torch.Generator, step: int, watch: Watch):
        self.run, self.generator, self.watch = run, generator, watch
        self.state: dict[str, Any] | None = capture(run, generator, step) if run.diag.locate_nonfinite else None

    def update(self, step: int) -> None:
        """After a log window found every loss finite."""
        if self.state is not None and step % (SNAPSHOT_WINDOWS * self.run.log_every) == 0:
            self.state = capture(self.run, self.generator, step)

    def first_nonfinite(self, losses: list[float], step: int, found: NonFinite | None, step_fn: Step
                        ) -> NonFinite | None:
        """Where a log window ending at `step` first went non-finite: `found` by the monitor's checks, or, where a
        loss went NaN/Inf before that, found by replaying up to that loss's step."""
        bad = first_nonfinite(losses, step - len(losses) + 1)
        if bad is not None and not (found and found.step <= bad):
            return self.locate(bad, step_fn)
        return found

    def locate(self, bad_step: int, step_fn: Step) -> NonFinite:
        """Replay from the last good state to `bad_step`, the first step whose loss was NaN/Inf, measuring every
        layer at every step: the first layer and step where a NaN/Inf appears. Without a saved state, only the
        step is known."""
        if self.state is None:
            return NonFinite(bad_step, "loss", "loss")
        start = restore(self.run, self.generator, self.state)
        # the run's own watch rests while a watch of every step replays
        with self.watch.quiet():
            replay = Watch(self.run.model, self.run.optimizer, for_replay(self.watch.monitor.layers, self.run.diag),
                           step=start, clip=self.run.clip)
            try:
                for step, idx in zip(range(start + 1, bad_step + 1), batch_indices(self.run, start), strict=False):
                    x, y = training_batch(self.run, idx, self.generator)
                    loss, _ = step_fn(x, y)
                    if replay.nonfinite:
                        return replay.nonfinite
                    if not torch.isfinite(loss):
                        return NonFinite(step, "loss", "loss")
            finally:
                replay.detach()
        return NonFinite(bad_step, "loss", "loss")

    def restore(self) -> int | None:
        """Put the run back to the last finite state; its step (None: no state was kept)."""
        return None if self.state is None else restore(self.run, self.generator, self.state)
