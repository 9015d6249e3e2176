"""What the tab's routes answer: charts as data (axes, series, reference lines), which the page draws as they are.
The backend holds no drawing and the page no numbers of its own: every value, band and reference line is here."""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LINEAR, LOG, LOG2 = "linear", "log", "log2"  # an axis' scale; log is base 10
# The per-layer metrics that span decades, drawn on a log axis wherever the tab shows them against depth
LOG_METRICS = frozenset({"act_std", "grad_std", "grad_norm", "weight_grad_norm", "update_ratio"})


@dataclass
class Series:
    """One line: its points in x order, a band around it where it has one (the seeds' range)."""

    label: str
    group: str  # its colour: a series of the same group has the same colour in every chart of a view
    x: list[float]
    y: list[float | None]
    dash: bool = False  # a reference or a second reading of the same group (initialisation, a threshold)
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    names: list[str] | None = None  # a name per point, shown on hover (a layer's module name)
    reference: bool = False  # a level to read against (chance), not data: drawn grey and thin


@dataclass
class Mark:
    """A vertical reference line across the chart."""

    x: float
    label: str
    group: str
    style: str = "dashed"  # or "dotted"


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    x_scale: str = LINEAR
    y_scale: str = LINEAR
    marks: list[Mark] = field(default_factory=list)
    note: str = ""  # a sentence under the chart: what the reference lines are
    y_range: tuple[float, float] | None = None  # fixed, where the quantity has bounds (a share: 0 to 1); else the
    # data's range, all of it
    not_finite: int = field(init=False)  # values that are inf or NaN (a signal that overflowed): JSON's null, not drawn

    def __post_init__(self) -> None:
        self.not_finite = sum(not_finite(s.y) for s in self.series)


def not_finite(values: list[float | None]) -> int:
    return sum(v is not None and not math.isfinite(v) for v in values)


def metric_scale(metric: str) -> str:
    return LOG if metric in LOG_METRICS else LINEAR


def as_json(value: Any) -> Any:
    """A route's answer as strict JSON: dataclasses as objects, a value that is not finite as null."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value
