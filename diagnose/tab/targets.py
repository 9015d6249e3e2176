"""What the tab can show under TensorBoard's logdir: each run, probe and sweep, found by what they leave behind
(a run's metrics.json, a sweep folder's multirun.yaml or summary.csv), read with diagnose's own readers."""

import threading
from dataclasses import dataclass
from pathlib import Path

from diagnose.errors import UserError
from diagnose.files import FINDINGS_JSON, METRICS_FILE, SWEEP_MARKS
from diagnose.sweep.runs import RunRecord, find_runs

RUN, PROBE, SWEEP = "run", "probe", "sweep"


@dataclass
class Target:
    """A run, a probe or a sweep, by its folder relative to the logdir: TensorBoard's name of that run ('.': the
    logdir itself), so the event files of a target are read under its id."""

    id: str
    kind: str
    runs: list[RunRecord]  # the run itself, or a sweep's jobs in folder order
    path: Path  # its folder
    sweep: str | None = None  # the sweep a job belongs to

    @property
    def probes(self) -> bool:
        return all(run.metrics.command == "probe" for run in self.runs)


@dataclass
class Scan:
    targets: dict[str, Target]  # by id: sweeps first, each followed by its jobs, then the runs of no sweep
    default: str | None  # the one to show first: the logdir's own, else the newest sweep or run


def run_id(logdir: Path, folder: Path) -> str:
    relative = folder.resolve().relative_to(logdir.resolve()).as_posix()
    return relative or "."


def scan(logdir: Path) -> Scan:
    """Every target below `logdir`."""
    try:
        runs = find_runs(logdir)
    except UserError:  # no runs (yet): nothing to show
        return Scan({}, None)
    runs = [run for run in runs if (run.path / METRICS_FILE).exists()]
    sweeps: dict[Path, list[RunRecord]] = {}
    for run in runs:
        parent = run.path.parent
        inside = parent.resolve().is_relative_to(logdir.resolve())  # the logdir may be one job of a sweep
        if inside and any((parent / mark).exists() for mark in SWEEP_MARKS):
            sweeps.setdefault(parent, []).append(run)
    targets: dict[str, Target] = {}
    for folder, jobs in sweeps.items():
        sweep = run_id(logdir, folder)
        targets[sweep] = Target(sweep, SWEEP, jobs, folder)
        for job in jobs:
            targets[run_id(logdir, job.path)] = Target(run_id(logdir, job.path), _kind(job), [job], job.path, sweep)
    for run in runs:
        targets.setdefault(run_id(logdir, run.path), Target(run_id(logdir, run.path), _kind(run), [run], run.path))
    return Scan(targets, _first(targets))


def job_ids(sweep: Target) -> list[str]:
    """TensorBoard's names of a sweep's jobs, in its order."""
    return [run.path.name if sweep.id == "." else f"{sweep.id}/{run.path.name}" for run in sweep.runs]


class Scanner:
    """`scan` of one logdir, done again only when a run or a sweep has written something: reading 60 runs' files
    takes ~0.1 s, and the page asks four routes at once."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self._lock = threading.Lock()
        self._seen: list[tuple[str, int, int]] | None = None
        self._scan = Scan({}, None)

    def __call__(self) -> Scan:
        with self._lock:
            seen = self._signature()
            if seen != self._seen:
                self._scan, self._seen = scan(self.logdir), seen
            return self._scan

    def _signature(self) -> list[tuple[str, int, int]]:
        """Each metrics.json and sweep file, with when it was written and its size."""
        files = [path for name in (METRICS_FILE, FINDINGS_JSON, *SWEEP_MARKS) for path in self.logdir.rglob(name)]
        return sorted((str(path), (info := path.stat()).st_mtime_ns, info.st_size) for path in files)


def _kind(run: RunRecord) -> str:
    return PROBE if run.metrics.command == "probe" else RUN


def _first(targets: dict[str, Target]) -> str | None:
    """The logdir's own target, else the newest target that is not a sweep's job."""
    if "." in targets:
        return "."
    tops = [t for t in targets.values() if t.sweep is None]
    if not tops:
        return None
    return max(tops, key=lambda t: max((r.path / METRICS_FILE).stat().st_mtime for r in t.runs)).id


def label(target: Target) -> str:
    """How the selector names it: a job by its folder (the swept values), anything else by its path."""
    if target.sweep is not None:
        return target.path.name
    what = {RUN: "run", PROBE: "probe", SWEEP: "probe sweep" if target.probes else "sweep"}[target.kind]
    jobs = f", {len(target.runs)} jobs" if target.kind == SWEEP else ""
    where = target.path.resolve().name if target.id == "." else target.id  # the logdir itself: by its name
    return f"{where} ({what}{jobs})"
