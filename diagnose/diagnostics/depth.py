"""Activation std and output-gradient norm against depth, drawn as a figure at each evaluation."""

import gc
import math
from collections.abc import Mapping
from typing import Any

from diagnose.diagnostics.layers import Layer
from diagnose.diagnostics.metrics import ROLES
from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.diagnostics.writing import write_figure
from diagnose.results import Evaluation

PANELS = (("act_std", "std of the output"), ("grad_norm", "norm of the gradient w.r.t. the output"))
COLOURS = {"weight": "tab:blue", "norm": "tab:green", "act": "tab:red"}
LOGITS = "black"
TITLE_SIZE = 14


class DepthFigure(Instrument):
    """Every layer's last measured values against its depth, one line per kind of layer, over the values at
    initialisation: an image in TensorBoard (written directly: a figure is not a step's scalar). Drawn at each
    evaluation, and at the first measurement from step `middle` on where the evaluations leave the middle of the
    run without one (a run of one epoch); every figure shows initialisation dashed. (A draw costs ~0.15 s.)"""

    def __init__(self, writer: Any, layers: list[Layer], run_name: str, middle: int | None):
        self.writer, self.layers, self.run_name, self.middle = writer, layers, run_name, middle
        self.latest: dict[str, float] = {}
        self.first: dict[str, float] = {}  # the first measurement: initialisation
        self.middle_drawn = False

    def read_back(self, step: int, values: dict[str, float]) -> None:
        if not any(tag.startswith("act_std/") for tag in values):
            return
        self.latest.update(values)
        if not self.first:
            self.first = dict(values)
        elif self.middle and not self.middle_drawn and step >= self.middle:
            self.middle_drawn = True
            self.draw(step)

    def state(self) -> dict[str, Any]:
        return {"latest": dict(self.latest), "first": dict(self.first), "middle_drawn": self.middle_drawn}

    def load_state(self, state: dict[str, Any]) -> None:
        self.latest, self.first = dict(state.get("latest", {})), dict(state.get("first", {}))
        self.middle_drawn = state.get("middle_drawn", False)

    def on_evaluation(self, evaluation: Evaluation, readings: Readings) -> None:
        if self.latest:
            self.draw(evaluation.step)

    def draw(self, step: int) -> None:
        # A figure's artists and its canvas reference each other: only the cyclic collector frees them (measured:
        # ~1.5 MB more RSS per figure left to it). A full collection costs ~0.2 s in a process holding torch, more
        # than the figure; with automatic collection paused while it is drawn, all of the figure stays in the
        # youngest generation, and collecting that one alone frees it in a few ms.
        collecting = gc.isenabled()
        gc.disable()
        try:
            figure = depth_figure(self.layers, self.latest, self.first, f"{self.run_name}, step {step}")
            write_figure(self.writer, "depth/act_std_and_grad_norm", figure, step)
            del figure
            gc.collect(generation=0)
        finally:
            if collecting:
                gc.enable()


def _value(values: Mapping[str, float], metric: str, name: str) -> float | None:
    """A layer's value where it can be drawn on a log axis."""
    value = values.get(f"{metric}/{name}")
    return value if value is not None and math.isfinite(value) and value > 0 else None


def depth_figure(layers: list[Layer], latest: Mapping[str, float], first: Mapping[str, float], title: str) -> Any:
    """Two panels, activation std and output-gradient norm against depth (log scale), a line per kind of layer,
    solid now and dashed at initialisation: vanishing or exploding signals slope, healthy ones stay flat. The head's
    output, the logits, is a point of its own: its scale is the loss's, not the signal's, and on the line of the
    conv/linear layers it would draw a cliff that is not there."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    weights = [layer.name for layer in layers if layer.role == "weight"]
    head = weights[-1] if weights else None  # the last conv/linear layer, as dashboard.py singles it out
    # a bare Figure, not pyplot: nothing global keeps it (or its caches) alive once TensorBoard has it; large
    # type, so the thumbnail TensorBoard shows is legible
    fig = Figure(figsize=(11, 4.2), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    drawn = [(latest, "-", "now")] + ([(first, "--", "at init")] if first is not latest else [])
    for ax, (metric, what) in zip(axes, PANELS, strict=True):
        for role, colour in COLOURS.items():
            members = [layer.name for layer in layers if layer.role == role]
            for values, style, when in drawn:
                points = [(depth, value) for depth, name in enumerate(members, start=1)
                          if name != head and (value := _value(values, metric, name)) is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=colour, marker="o" if style == "-" else None,
                            markersize=4, label=f"{ROLES[role]} ({when})")
        for values, style, when in drawn:  # the logits at the head's depth among the conv/linear layers
            if head is not None and (value := _value(values, metric, head)) is not None:
                ax.plot([len(weights)], [value], "*", color=LOGITS, markersize=11,
                        markerfacecolor=LOGITS if style == "-" else "none", label=f"logits, {head} ({when})")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths are whole layers
        ax.set_xlabel("depth (layer of its kind, input to output)", fontsize=11)
        ax.set_title(what, fontsize=13, y=1.0)  # placed, not measured: matplotlib would lay out the ticks to place it
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=4, fontsize=10, frameon=False)
    fig.suptitle(fitted(fig, title, TITLE_SIZE), fontsize=TITLE_SIZE, parse_math=False)
    # fixed margins: tight_layout would render the figure once more to measure its text (0.06-0.3 s a figure)
    fig.subplots_adjust(left=0.075, right=0.99, bottom=0.25, top=0.84, wspace=0.2)  # room for 2x10^-10
    return fig


def fitted(fig: Any, title: str, size: float) -> str:
    """`title` shortened in the middle to one line of `fig`'s width: a long run name keeps its start (the date and
    time) and its end (the last overrides, the step), where centring it would cut both off. Measured with the
    renderer the PNG is drawn with, which the canvas keeps."""
    from matplotlib.font_manager import FontProperties

    renderer, font, room = fig.canvas.get_renderer(), FontProperties(size=size), 0.97 * fig.bbox.width

    def fits(text: str) -> bool:
        return renderer.get_text_width_height_descent(text, font, ismath=False)[0] <= room

    def cut(keep: int) -> str:
        return title[:keep // 2] + "…" + title[len(title) - (keep - keep // 2):]

    if fits(title):
        return title
    low, high = 0, len(title) - 1  # the most characters kept with a fit lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(cut(middle)) else (low, middle - 1)
    return cut(low)
