"""The depth profile: per kind of layer, activation std, gradient norm and update/weight ratio against depth on a log
axis. A run's comes from its per-layer scalars (`metric/NN layer`, every measuring step: the page slides over them,
initialisation dashed); a probe's from its metrics.json, beside the theory the tool has (a variance-preserving init
keeps the profile flat; the Jacobian's mean squared singular value grows by χ₁ a layer); a sweep's jobs side by side,
at initialisation and at their last measurement."""

from dataclasses import dataclass, field

from diagnose.diagnostics.metrics import ROLES, metric_of
from diagnose.results import JacobianSpectrum, RunMetrics
from diagnose.sweep.runs import swept_keys
from diagnose.sweep.sensitivity import setting
from diagnose.tab.charts import LOG, Chart, Series, metric_scale, not_finite
from diagnose.tab.events import Events, Points, layer_of
from diagnose.tab.targets import PROBE, SWEEP, Target, job_ids

PROFILE = ("act_std", "grad_norm", "update_ratio")  # the signal forward, the gradient backward, what a step changes
SIGNAL_ROLE = "act"  # a sweep's jobs side by side are compared at their activations (the weights for update_ratio)


@dataclass
class DepthLine:
    """One kind of layer: a value per depth at each measured step."""

    label: str
    group: str  # its role: the colour
    layers: list[str]  # module names, by depth
    values: list[list[float | None]]  # [step][depth]


@dataclass
class DepthPanel:
    metric: str
    title: str
    y_scale: str
    lines: list[DepthLine]
    not_finite: list[int] = field(init=False)  # at each step, the values that are inf or NaN (JSON's null)

    def __post_init__(self) -> None:
        steps = len(self.lines[0].values) if self.lines else 0
        self.not_finite = [sum(not_finite(line.values[k]) for line in self.lines) for k in range(steps)]


@dataclass
class DepthProfile:
    """A run's profile at each measured step; the first is initialisation."""

    steps: list[int]
    epochs: list[float]
    panels: list[DepthPanel]


@dataclass
class DepthView:
    profile: DepthProfile | None = None  # a run
    charts: list[Chart] = field(default_factory=list)  # a probe, or a sweep's jobs side by side


def depth_view(target: Target, events: Events) -> DepthView:
    if target.kind == PROBE:
        return DepthView(charts=probe_charts([(target.id, target.runs[0].metrics)], by_role=True))
    if target.kind == SWEEP and target.probes:
        return DepthView(charts=probe_charts([(run.path.name, run.metrics) for run in target.runs], by_role=False))
    if target.kind == SWEEP:
        return DepthView(charts=sweep_charts(target, events))
    return DepthView(profile=run_profile(target.id, target.runs[0].metrics, events))


def per_layer(series: dict[str, Points], metrics: RunMetrics) -> dict[str, dict[str, list[tuple[str, Points]]]]:
    """metric -> role -> [(layer, its points)] by depth, from a run's per-layer tags."""
    found: dict[str, dict[str, dict[int, tuple[str, Points]]]] = {}
    for tag, points in series.items():
        parsed = layer_of(tag)
        if parsed is None or parsed[2] not in metrics.layers:
            continue
        metric, depth, name = parsed
        found.setdefault(metric, {}).setdefault(metrics.layers[name].role, {})[depth] = (name, points)
    return {metric: {role: [by_depth[d] for d in sorted(by_depth)] for role, by_depth in roles.items()}
            for metric, roles in found.items()}


def profile_tags(tags: list[str]) -> list[str]:
    return [tag for tag in tags if (parsed := layer_of(tag)) is not None and parsed[0] in PROFILE]


def run_profile(run: str, metrics: RunMetrics, events: Events) -> DepthProfile | None:
    """Every measured step of the run's profile, None when it measured no per-layer statistics (diag=off)."""
    tags = profile_tags(events.tags([run]).get(run, []))
    layers = per_layer(events.read([run], tags).get(run, {}), metrics)
    steps = sorted({step for roles in layers.values() for lines in roles.values() for _, points in lines
                    for step, _ in points})
    if not steps:
        return None
    panels = []
    for metric in PROFILE:
        lines = []
        for role in ROLES:  # in the order conv/linear, norm, activation
            members = layers.get(metric, {}).get(role)
            if not members:
                continue
            at = [dict(points) for _, points in members]
            lines.append(DepthLine(ROLES[role], role, [name for name, _ in members],
                                   [[values.get(step) for values in at] for step in steps]))
        if lines:
            panels.append(DepthPanel(metric, _title(metric), metric_scale(metric), lines))
    per_epoch = metrics.epochs / metrics.steps if metrics.steps else 0.0
    return DepthProfile(steps, [step * per_epoch for step in steps], panels)


def sweep_charts(target: Target, events: Events) -> list[Chart]:
    """A chart per profile metric, a line per job at its first measurement (initialisation, dashed) and at its last,
    a colour per setting (a job's seeds share one), for the layers of SIGNAL_ROLE (or the metric's own, where it
    has no activations)."""
    keys = swept_keys(target.runs)
    roles = {metric: SIGNAL_ROLE if SIGNAL_ROLE in metric_of(metric).roles else metric_of(metric).roles[0]
             for metric in PROFILE}
    ids = job_ids(target)
    listing = events.tags(ids)
    # only the layers drawn: every point of every layer of 60 jobs takes TensorBoard ~0.7 s to hand over
    wanted = {tag for run, run_id in zip(target.runs, ids, strict=True) for tag in profile_tags(listing.get(run_id, []))
              if (layer := run.metrics.layers.get(layer_of(tag)[2])) and layer.role == roles[layer_of(tag)[0]]}
    data = events.read(ids, sorted(wanted))
    charts = []
    for metric, role in roles.items():
        series = []
        for run, run_id in zip(target.runs, ids, strict=True):
            name = run.path.name
            members = per_layer(data.get(run_id, {}), run.metrics).get(metric, {}).get(role, [])
            if not members:
                continue
            depths = list(range(1, len(members) + 1))
            layers = [layer for layer, _ in members]
            group = setting(run, keys)
            series.append(Series(f"{name} (last)", group, depths, [points[-1][1] for _, points in members],
                                 names=layers))
            series.append(Series(f"{name} (init)", group, depths, [points[0][1] for _, points in members], dash=True,
                                 names=layers))
        if series:
            charts.append(Chart(f"{_title(metric)}: {ROLES[role]}", "depth (layer of its kind, input to output)",
                                metric, series, y_scale=metric_scale(metric),
                                note="solid: each job's last measurement; dashed: at initialisation"))
    return charts


def probe_charts(probes: list[tuple[str, RunMetrics]], by_role: bool) -> list[Chart]:
    """One probe's profile a colour per kind of layer (`by_role`), or several probes' a colour each at their
    activations; each with the flat line a variance-preserving init would keep (from the first layer for the signal,
    the last for the gradient, which flows backwards), and the Jacobian's mean squared singular value beside
    mean-field theory's χ₁."""
    charts = []
    for metric in PROFILE:
        series = []
        for name, metrics in probes:
            for role in ROLES if by_role else (SIGNAL_ROLE,):
                members = metrics.over_layers(metric, role)
                if not members:
                    continue
                group = role if by_role else name
                label = ROLES[role] if by_role else name
                depths = list(range(1, len(members) + 1))
                layers, values = [layer for layer, _ in members], [value for _, value in members]
                series.append(Series(label, group, depths, values, names=layers))
                if role == SIGNAL_ROLE:
                    anchor = values[0] if metric == "act_std" else values[-1]
                    series.append(Series(f"{label}: variance preserved", group, depths, [anchor] * len(depths),
                                         dash=True))
        if series:
            title = _title(metric) if by_role else f"{_title(metric)}: {ROLES[SIGNAL_ROLE]}"
            charts.append(Chart(title, "depth (layer of its kind, input to output)", metric, series,
                                y_scale=metric_scale(metric),
                                note="dashed: flat, what a variance-preserving init keeps at every depth"))
    jacobian = [(name, metrics.jacobian) for name, metrics in probes if metrics.jacobian is not None]
    if jacobian:
        charts += [jacobian_chart(jacobian, single=by_role), spread_chart(jacobian, single=by_role)]
    return charts


def jacobian_chart(spectra: list[tuple[str, JacobianSpectrum]], single: bool) -> Chart:
    """Mean σ² of J_l = ∂h_l/∂x against depth, measured, and from the first depth on by χ₁ a layer (dashed)."""
    series, notes = [], []
    for name, spectrum in spectra:
        depths = [row[0] for row in spectrum.depths]
        means = [row[1] for row in spectrum.depths]
        label = "measured" if single else name
        series.append(Series(label, "jacobian" if single else name, depths, means))
        chi = spectrum.chi_predicted
        if chi is not None and means:
            series.append(Series(f"{'' if single else name + ': '}mean-field χ₁ = {chi:.3g} a layer",
                                 "theory" if single else name, depths,
                                 [means[0] * chi ** (depth - depths[0]) for depth in depths], dash=True))
        measured = "-" if spectrum.chi_measured is None else f"{spectrum.chi_measured:.3g}"
        notes.append(f"{'' if single else name + ': '}χ measured {measured}, predicted "
                     f"{'none (normalisation or maxout)' if chi is None else f'{chi:.3g}'}")
    return Chart("input-output Jacobian: mean squared singular value of ∂h_l/∂x", "depth", "mean σ²", series,
                 y_scale=LOG, note="; ".join(notes))


def spread_chart(spectra: list[tuple[str, JacobianSpectrum]], single: bool) -> Chart:
    """The std of J_l's squared singular values against depth: how unequally directions are stretched, which grows
    with depth unless the network is dynamically isometric (orthogonal weights spread less than Gaussian ones)."""
    series = [Series("measured" if single else name, "jacobian" if single else name, [row[0] for row in s.depths],
                     [row[2] for row in s.depths]) for name, s in spectra]
    return Chart("input-output Jacobian: spread (std) of the squared singular values", "depth", "std σ²", series,
                 y_scale=LOG)


def _title(metric: str) -> str:
    return metric_of(metric).title if metric_of(metric) else metric

