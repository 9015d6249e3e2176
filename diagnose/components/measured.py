"""What an activation or norm the tool does not know is, found by measuring it: the shape of an activation on a grid
(units can die, tails flatten, or neither), whether a norm's output for one example depends on the rest of the batch.
"""

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diagnose.errors import UserError
from diagnose.kinds import BATCH, EXAMPLE, IDENTITY, RELU_LIKE, SATURATING, SMOOTH

REACH = 20.0  # the grid spans [-REACH, REACH]: pre-activations of a healthy net stay well inside it
TAIL = 10.0  # |z| beyond this is a tail
FLAT = 1e-2  # a tail is flat where its slope stays below this fraction of the steepest slope (sigmoid: 2e-4 at 10)


@dataclass(frozen=True)
class Shape:
    """An activation's measured shape: its kind and the levels its tails approach (saturating ones only matter)."""

    kind: str
    low: float  # the output at the grid's lower and upper ends
    high: float

    def saturated(self, y: torch.Tensor, settings: Any) -> torch.Tensor:
        """Outputs within `settings.sigmoid_flat` of the output range from either tail's level: sigmoid's own rule
        (outputs below 0.02 or above 0.98 of its range 0..1), for a range of any size."""
        low, high = min(self.low, self.high), max(self.low, self.high)
        margin = settings.sigmoid_flat * (high - low)
        return (y < low + margin) | (y > high - margin)


def _on_grid(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, f(z), f'(z)) on the grid, in float64 so that a slope is exactly 0 only where the function is flat; on a
    CPU copy, wherever the model is."""
    f = copy.deepcopy(module).cpu().double()
    z = torch.linspace(-REACH, REACH, 4001, dtype=torch.float64, requires_grad=True)
    y = f(z.clone())  # a clone: an in-place activation must not write into the grid
    (slope,) = torch.autograd.grad(y.sum(), z)
    return z.detach(), y.detach(), slope


def activation_shape(module: nn.Module, path: str) -> Shape:
    """Zero slope on a whole half-line: units can die (relu_like). Both tails flat: saturating. A constant slope:
    identity. Otherwise smooth (softplus and x*sigmoid(x) flatten on one side without ever stopping the gradient)."""
    try:
        z, y, slope = _on_grid(module)
    except Exception as err:  # noqa: BLE001 - the user's forward
        raise UserError(f"act._target_={path}: calling it on a 1-D tensor of float64 pre-activations raised "
                        f"{type(err).__name__}: {err}. An activation must apply elementwise to any shape.") from None
    left, right, steepest = slope[z < -TAIL], slope[z > TAIL], slope.abs().max()
    flat = [tail.abs().max() <= FLAT * steepest for tail in (left, right)]
    if steepest == 0 or all(flat):
        kind = SATURATING
    elif (left == 0).all() or (right == 0).all():
        kind = RELU_LIKE
    elif (slope - slope[0]).abs().max() <= 1e-9 * steepest:
        kind = IDENTITY
    else:
        kind = SMOOTH
    return Shape(kind, float(y[0]), float(y[-1]))


def gain(module: nn.Module) -> float:
    """1/sqrt(E[f(z)^2]) for z ~ N(0, 1), the registry's rule for the activations calculate_gain does not know."""
    f = copy.deepcopy(module).cpu().double()
    z = torch.linspace(-12, 12, 24_001, dtype=torch.float64)
    density = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    with torch.no_grad():
        second = float(torch.trapezoid(f(z.clone()) ** 2 * density, z))
    return 1 / math.sqrt(second) if second > 0 else 1.0


def depends_on_batch(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether the module's output for one example changes when the other examples of its batch do: its first
    example is normalised beside two different companions, in training mode, on a copy (no statistics kept)."""
    norm = copy.deepcopy(module).train()
    first = x[:1]
    with torch.no_grad():
        beside_one = norm(torch.cat([first, first * 3 + 1]))[0]
        beside_other = norm(torch.cat([first, 2 - first]))[0]
    return not torch.allclose(beside_one, beside_other, rtol=1e-4, atol=1e-5)


def norm_kind(module: nn.Module, path: str) -> str:
    """BATCH or EXAMPLE for a norm built for 8 channels: measured on a (2, 8, 5, 5) conv map, or a (2, 8) vector
    where it takes only those."""
    errors = []
    for shape in ((2, 8, 5, 5), (2, 8)):
        try:
            return BATCH if depends_on_batch(module, torch.randn(shape)) else EXAMPLE
        except Exception as err:  # noqa: BLE001 - the user's forward
            errors.append(f"{shape}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise UserError(f"norm._target_={path}: built for 8 channels, it normalised neither a (batch, 8, H, W) map nor a "
                    f"(batch, 8) vector ({'; '.join(errors)}).")


def is_elementwise(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether the module maps each entry of `x` on its own (an activation): shuffling the entries of its input
    shuffles its output alike. A copy runs, so hooks on the module do not see it."""
    f = copy.deepcopy(module)
    order = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0)).to(x.device)
    with torch.no_grad():
        out = f(x.clone())
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return False
        shuffled = f(x.flatten()[order].view_as(x).clone())
    return torch.allclose(shuffled.flatten(), out.flatten()[order], rtol=1e-5, atol=1e-6, equal_nan=True)
