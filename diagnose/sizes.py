"""Sizes that cannot fit in memory, refused before allocating: the probe's batch, the exact Jacobian, the noise batch.

Each need is a lower bound computed from the config (the tensors that must exist at once, in float32), set against
the device's free memory; what is refused names a size that would fit."""

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from diagnose.errors import UserError

FLOAT = 4  # bytes of a float32
# what is suggested leaves room for what the lower bound leaves out (gradients, the backward's temporaries)
HEADROOM = 2


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors: CUDA's own count, or Linux's MemAvailable for the CPU; None where not known (an
    Apple GPU, another system), and nothing is refused there."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)


def gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**28 else f"{size / 2**20:,.0f} MiB"


def refuse(what: str, need: int, device: torch.device, instead: str) -> None:
    """A UserError when `need` bytes exceed the device's free memory: what it is, both sizes, and `instead`."""
    free = free_bytes(device)
    if free is not None and need > free:
        raise UserError(f"{what} needs at least {gib(need)} of memory and the {device.type} has {gib(free)} free: "
                        f"refused before allocating. {instead}")


def per_example(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(bytes of the parameters, bytes of every layer's output for one example of `shape`): what a forward pass
    keeps for the backward. Counted by a forward pass on the meta device (shapes, no memory, the model's own weights
    and BN statistics untouched); (parameters, 0) where the network cannot run there."""
    kept = [0]

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and not list(module.children()):  # leaf layers: no output twice
            kept[0] += output.numel() * output.element_size()

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    meta = {name: torch.empty_like(t, device="meta") for name, t in [*model.named_parameters(),
                                                                      *model.named_buffers()]}
    hooks = [module.register_forward_hook(count) for module in model.modules()]
    try:
        torch.func.functional_call(model, meta, (torch.empty(2, *shape, device="meta"),))  # 2: BN takes no fewer
    except Exception:  # noqa: BLE001 - an operation with no meta kernel: the layers' outputs are not counted
        return weights, 0
    finally:
        for hook in hooks:
            hook.remove()
    return weights, kept[0] // 2


def check_probe(config: object, device: torch.device, build: Callable[[tuple[int, int, int], int], nn.Module]) -> None:
    """A gaussian probe whose batch (its inputs and every layer's output) and weights cannot fit, refused with a
    probe.batch, else a probe.shape, that would. `build(shape, classes)` builds the configured network."""
    probe = config.probe
    if probe.input != "gaussian":  # a batch of the data's own small images: its shape is not the user's to choose
        return
    free = free_bytes(device)
    if free is None:
        return

    @cache
    def counted(shape: tuple[int, ...]) -> tuple[int, int]:
        try:
            with torch.device("meta"):  # the network as configured, its weights taking no memory
                return per_example(build(shape, probe.classes), shape)
        except Exception:  # noqa: BLE001 - a network that cannot be built on the meta device: counted by its inputs
            return 0, 0

    def need(shape: list[int], batch: int) -> int:
        weights, outputs = counted(tuple(shape))
        return weights + batch * (math.prod(shape) * FLOAT + outputs)

    shape, batch = list(probe.shape), probe.batch
    needed = need(shape, batch)
    if needed <= free:
        return
    fits = next((b for b in (batch // 2**k for k in range(1, 32)) if b >= 2 and need(shape, b) * HEADROOM <= free),
                None)
    if fits is not None:
        instead = f"probe.batch={fits} would fit."
    else:
        smaller = shape
        while smaller[1] > 1 and need(smaller, 2) * HEADROOM > free:
            smaller = [smaller[0], max(1, smaller[1] // 2), max(1, smaller[2] // 2)]
        instead = f"probe.shape=[{','.join(map(str, smaller))}] probe.batch=2 would fit." \
            if need(smaller, 2) * HEADROOM <= free else \
            f"The network's weights alone need {gib(need(smaller, 0))}: a smaller model.width or model.depth would fit."
    refuse(f"probe.batch={batch} of probe.shape={shape} (the inputs and every layer's output)", needed, device,
           instead)


def check_exact_jacobian(model: nn.Module, x: torch.Tensor, method: str) -> None:
    """probe.jacobian=exact, refused where J at every depth of the example `x` cannot fit: jacfwd pushes all of its
    input directions through the network at once and keeps every depth's J (auto picks exact only where it is
    small: diagnostics/jacobian.py's EXACT_LIMIT)."""
    from diagnose.diagnostics.jacobian import jacobian_entries

    if method != "exact":
        return
    entries = jacobian_entries(model, x)
    refuse(f"probe.jacobian=exact (J at every depth of one example: {x.numel():,} inputs, {entries:,} entries)",
           entries * FLOAT, x.device, "probe.jacobian=moments measures the spectrum's mean and std by random "
           "directions, one at a time, in the memory of a forward pass (probe.jacobian=auto picks it by size).")


def check_noise_batch(model: nn.Module, shape: tuple[int, ...], noise_batch: int, micro: int,
                      device: torch.device) -> None:
    """A noise batch (`noise_batch` examples of `shape`, prepared as float32 at once, then `micro` micro-batches
    through the network one at a time) that cannot fit, refused with a diag.noise_batch that would."""
    weights, outputs = per_example(model, shape)
    example = math.prod(shape) * FLOAT

    def need(batch: int) -> int:
        return weights + batch * example + batch // micro * outputs

    if need(noise_batch) <= (free_bytes(device) or math.inf):
        return
    fits = next((b for b in (noise_batch // 2**k for k in range(1, 40)) if b >= 2 * micro
                 and need(b) * HEADROOM <= (free_bytes(device) or math.inf)), None)
    instead = f"diag.noise_batch={fits} would fit." if fits else "Lower diag.noise_micro, or measure on a GPU."
    refuse(f"diag.noise_batch={noise_batch} (its examples, and each of its {micro} micro-batches through the "
           f"network)", need(noise_batch), device, instead)
