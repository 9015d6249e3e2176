"""Notice a non-finite loss within a step or two of its appearing, without making the device wait."""

import math

import torch


class NonFiniteLoss:
    """`check(loss, step)` returns a step whose loss is known by now to be NaN/Inf, else None.

    On the CPU every op has finished when it returns, so each step's loss is checked on the spot. On a CUDA
    device reading it would stall the queue of kernels every step: instead each step's flag is copied to
    pinned host memory asynchronously and read one step later, once its event says it has arrived; a flag
    still in flight by then is left to the log window's check. Elsewhere (mps) only that check runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.mode = device.type if device.type in ("cpu", "cuda") else "window"
        if self.mode == "cuda":
            # host memory, one slot per step; pinned, so that the copy from the device is asynchronous
            self.flags = torch.zeros(2, dtype=torch.bool, pin_memory=torch.cuda.is_available())
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self.steps: list[int | None] = [None, None]

    def check(self, loss: torch.Tensor, step: int) -> int | None:
        if self.mode == "cpu":
            return None if math.isfinite(loss.item()) else step  # item(): 0.2 us here, isfinite() 5 us
        if self.mode == "window":
            return None
        slot, previous = step % 2, (step + 1) % 2
        found = None
        if self.steps[previous] is not None and self.events[previous].query():  # arrived: reading cannot block
            found = self.steps[previous] if self.flags[previous] else None
        self.flags[slot].copy_(~torch.isfinite(loss), non_blocking=True)
        self.events[slot].record()
        self.steps[slot], self.steps[previous] = step, None
        return found
