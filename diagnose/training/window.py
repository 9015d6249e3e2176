"""The log window: training loss and accuracy of the steps since the last log, kept on the device."""

import math
import time

import torch


class LogWindow:
    """Per-step losses stay on the device; reading them is the one host sync of the hot loop, once per window (or
    at once when a loss went non-finite, which then names the exact step). Evaluations are timed out of it."""

    def __init__(self, size: int, device: torch.device, losses: list[float], correct: int):
        self.losses = torch.zeros(size, device=device)
        self.losses[:len(losses)] = torch.tensor(losses, device=device)
        self.correct = torch.tensor(float(correct), device=device)
        self.steps, self.size = len(losses), size
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, correct: torch.Tensor) -> None:
        self.losses[self.steps] = loss
        self.correct += correct
        self.steps += 1

    @property
    def full(self) -> bool:
        return self.steps == self.size

    def read(self) -> tuple[list[float], float, float]:
        """(the window's losses, its number correct, its seconds), read back together; the window starts anew."""
        *losses, correct = torch.cat([self.losses[:self.steps], self.correct[None]]).tolist()
        seconds = time.perf_counter() - self.started
        self.correct.zero_()
        self.steps, self.started = 0, time.perf_counter()
        return losses, correct, seconds

    def pause(self, seconds: float) -> None:
        """Leave `seconds` (an evaluation) out of the window's training time."""
        self.started += seconds

    def state(self) -> tuple[list[float], int]:
        """The losses and the number correct of the steps so far, for a checkpoint (a host sync: checkpoints are
        rare)."""
        return self.losses[:self.steps].tolist(), int(self.correct.item())


def first_nonfinite(losses: list[float], first_step: int) -> int | None:
    """The step of the first NaN/Inf among a window's losses, which start at `first_step`."""
    return next((first_step + i for i, v in enumerate(losses) if not math.isfinite(v)), None)
