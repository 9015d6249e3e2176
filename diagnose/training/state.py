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
        # a copy: load_state_dict adopts the saved tensors themselves, so the steps after it would update the
        # momentum inside `state`, and a second restore from it (the divergence replay) would start wrong
        run.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        _lay_out_like_parameters(run.optimizer)
        run.scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])  # a CPU byte tensor, whatever the generator's device
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"The checkpoint does not fit the run this config builds on this machine: {err}".split("\n")[0]
                        + " Resume with the configuration and the kind of device the run was started with.") from None
    return state["step"]


def _lay_out_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (momentum, Adam's moments) its parameter's memory layout.

    load_state_dict keeps the strides the tensors were saved with, and the fused kernels read parameter,
    gradient and state as flat memory: state saved NCHW (an older checkpoint, a run begun on a GPU) and a
    model now channels_last would be mixed up element by element, silently."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The batch order of an epoch depends on (seed, epoch) only, so any step can be replayed or resumed."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
