"""Everything that determines how training continues from a step, captured and restored exactly."""

import copy
from typing import Any

import torch

from diagnose.build import Run
from diagnose.errors import UserError


def capture(run: Run, generator: torch.Generator, step: int) -> dict[str, Any]:
    """A copy (not a view) of the training state after `step` completed steps."""
    state = {
        "step": step,
        "model": copy.deepcopy(run.model.state_dict()),
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "scheduler": copy.deepcopy(run.scheduler.state_dict()),
        "generator": generator.get_state(),  # augmentation
        "rng": torch.get_rng_state(),  # dropout, on the CPU
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore(run: Run, generator: torch.Generator, state: dict[str, Any]) -> int:
    """Put `run` back into `state`; returns its step."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])  # a CPU byte tensor, whatever the generator's device
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"The checkpoint does not fit the run this config builds on this machine: {err}".split("\n")[0]
                        + " Resume with the configuration and the kind of device the run was started with.") from None
    return state["step"]


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The batch order of an epoch depends on (seed, epoch) only, so any step can be replayed or resumed."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
