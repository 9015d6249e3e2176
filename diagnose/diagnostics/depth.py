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
    run without one (a run of one epoch); every figure shows initialisation dashed. One figure is built per run and
    redrawn with each one's values: a first draw costs ~0.17 s, a redraw about half (its ticks and text exist)."""

    def __init__(self, writer: Any, layers: list[Layer], run_name: str, middle: int | None):
        self.writer, self.layers, self.run_name, self.middle = writer, layers, run_name, middle
        self.latest: dict[str, float] = {}
        self.first: dict[str, float] = {}  # the first measurement: initialisation
        self.middle_drawn = False
        self._plot: DepthPlot | None = None

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
        # Drawing leaves garbage in reference cycles (text layouts, paths): only the cyclic collector frees it. A full
        # collection costs ~0.2 s in a process holding torch, more than the figure; with automatic collection paused
        # while it is drawn, all of it stays in the youngest generation, and collecting that one alone frees it in a
        # few ms.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if self._plot is None:
                self._plot = DepthPlot(self.layers)
            figure = self._plot.show(self.latest, self.first, f"{self.run_name}, step {step}")
            write_figure(self.writer, "depth/act_std_and_grad_norm", figure, step)
            del figure
            gc.collect(generation=0)
        finally:
            if collecting:
                gc.enable()

    def close(self) -> None:
        self._plot = None  # a figure's artists and its canvas reference each other: the collector frees it


def _value(values: Mapping[str, float], metric: str, name: str) -> float | None:
    """A layer's value where it can be drawn on a log axis."""
    value = values.get(f"{metric}/{name}")
    return value if value is not None and math.isfinite(value) and value > 0 else None


WHEN = (("now", "-"), ("at init", "--"))  # the values drawn, each with its line style
# the lines of a panel, in the order the legend lists them: each kind of layer now and at init, then the logits' point
SERIES = [(role, when) for role in COLOURS for when, _ in WHEN] + [(None, when) for when, _ in WHEN]


class DepthPlot:
    """Two panels, activation std and output-gradient norm against depth (log scale), a line per kind of layer,
    solid now and dashed at initialisation: vanishing or exploding signals slope, healthy ones stay flat. The head's
    output, the logits, is a point of its own: its scale is the loss's, not the signal's, and on the line of the
    conv/linear layers it would draw a cliff that is not there.

    Its figure is built at the first `show` with every line it may draw, and later ones set their values: a run's
    later figures reuse the ticks, text and lines of its first, the same image as a figure built afresh in half the
    time (~0.09 s instead of ~0.17)."""

    def __init__(self, layers: list[Layer]):
        weights = [layer.name for layer in layers if layer.role == "weight"]
        self.head = weights[-1] if weights else None  # the last conv/linear layer, as dashboard.py singles it out
        self.head_depth = len(weights)
        # the layers of each kind, in depth order, that each kind's line joins (the head is a point of its own)
        self.members = {role: [layer.name for layer in layers if layer.role == role and layer.name != self.head]
                        for role in COLOURS}
        self.figure: Any = None
        self.lines: list[list[tuple[str | None, str, Any]]] = []  # per panel: (role, None for the logits; when; line)
        self._legend: tuple[Any, list[Any]] | None = None  # the legend and the lines it lists

    def _build(self, drawing: list[bool]) -> None:
        """A new figure, with the lines of each panel that has something to draw, empty."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        # a bare Figure, not pyplot: nothing global keeps it (or its caches) alive once TensorBoard has it; large
        # type, so the thumbnail TensorBoard shows is legible
        self.figure = Figure(figsize=(11, 4.2), dpi=90)
        FigureCanvasAgg(self.figure)
        self.lines, self._legend = [], None
        for ax, (_, what), lines in zip(self.figure.subplots(1, 2), PANELS, drawing, strict=True):
            self.lines.append([(role, when, self._line(ax, role, when)) for role, when in SERIES if lines])
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths are whole layers
            ax.set_xlabel("depth (layer of its kind, input to output)", fontsize=11)
            ax.set_title(what, fontsize=13, y=1.0)  # placed, not measured: matplotlib would lay out the ticks
            ax.tick_params(labelsize=10)
            ax.grid(alpha=0.3)
        # fixed margins: tight_layout would render the figure once more to measure its text (0.06-0.3 s a figure)
        self.figure.subplots_adjust(left=0.075, right=0.99, bottom=0.25, top=0.84, wspace=0.2)  # room for 2x10^-10

    def _line(self, ax: Any, role: str | None, when: str) -> Any:
        """An empty line of a kind of layer, or the logits' point at the head's depth among the conv/linear layers
        (role None): filled now, hollow at initialisation."""
        style = dict(WHEN)[when]
        if role is None:
            fill = LOGITS if style == "-" else "none"
            line, = ax.plot([], [], "*", color=LOGITS, markersize=11, markerfacecolor=fill,
                            label=f"logits, {self.head} ({when})")
        else:
            line, = ax.plot([], [], style, color=COLOURS[role], marker="o" if style == "-" else None, markersize=4,
                            label=f"{ROLES[role]} ({when})")
        return line

    def show(self, latest: Mapping[str, float], first: Mapping[str, float], title: str) -> Any:
        """The figure with `latest` (solid) over `first` (dashed): each line where it has a point, each panel scaled
        to what it draws, the lines of the first panel in the legend, `title` fitted above."""
        values = {"now": latest, "at init": first if first is not latest else {}}  # the same: drawn once
        points = [{(role, when): self._points(values[when], metric, role) for role, when in SERIES}
                  for metric, _ in PANELS]
        drawing = [any(depths for depths, _ in panel.values()) for panel in points]
        if self.figure is None or drawing != [bool(lines) for lines in self.lines]:
            # the first figure; or a panel that had lines has nothing finite to draw (a diverged run), or the other
            # way round: built anew, so that a bare panel is scaled as matplotlib scales a new one
            self._build(drawing)
        for ax, lines, panel in zip(self.figure.axes, self.lines, points, strict=True):
            for role, when, line in lines:
                line.set_data(*panel[role, when])
                line.set_visible(bool(panel[role, when][0]))
            if lines:
                ax.relim(visible_only=True)
                ax.autoscale_view()
        shown = [line for _, _, line in self.lines[0] if line.get_visible()]
        if self._legend is None or self._legend[1] != shown:
            if self._legend is not None:
                self._legend[0].remove()
            legend = self.figure.legend(shown, [line.get_label() for line in shown], loc="lower center", ncol=4,
                                        fontsize=10, frameon=False) if shown else None
            self._legend = (legend, shown) if legend is not None else None
        self.figure.suptitle(fitted(self.figure, title, TITLE_SIZE), fontsize=TITLE_SIZE, parse_math=False)
        return self.figure

    def _points(self, values: Mapping[str, float], metric: str, role: str | None) -> tuple[list[int], list[float]]:
        """(depths, values) of a kind of layer's line, or of the logits' point (role None), where they are finite."""
        if role is None:
            names = {self.head_depth: self.head} if self.head is not None else {}
        else:
            names = dict(enumerate(self.members[role], start=1))
        points = {depth: value for depth, name in names.items() if (value := _value(values, metric, name)) is not None}
        return list(points), list(points.values())


def depth_figure(layers: list[Layer], latest: Mapping[str, float], first: Mapping[str, float], title: str) -> Any:
    """The depth figure of `latest` over `first`, built afresh (DepthPlot)."""
    return DepthPlot(layers).show(latest, first, title)


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
