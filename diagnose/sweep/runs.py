"""Find the runs under a folder and read what each left behind (metrics.json, its command-line overrides)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diagnose.errors import UserError
from diagnose.files import CHECKPOINT_FILE, METRICS_FILE, read_metrics
from diagnose.results import RunMetrics


@dataclass
class RunRecord:
    path: Path
    overrides: dict[str, Any]  # key -> value, as given on the command line (`norm=gn` -> {"norm": "gn"})
    metrics: RunMetrics

    @property
    def status(self) -> str:
        return self.metrics.status

    def final(self, key: str) -> float | None:
        return getattr(self.metrics.final, key)


def _parse_value(text: str) -> Any:
    """A command-line value as the user meant it: numbers as numbers, true/false as booleans, anything else as
    typed (YAML would read `off` and `no` as false: `diag=off` must stay off)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_overrides(run_dir: Path) -> dict[str, Any]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # a broken file spoils this run's columns, no more
        return {}
    pairs = (item.lstrip("+~").split("=", 1) for item in items if isinstance(item, str) and "=" in item)
    return {key: _parse_value(value) for key, value in pairs}


def find_runs(path: Path) -> list[RunRecord]:
    """The run at `path`, or every run below it (a multirun folder), in folder order."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist. Give a run folder (outputs/<date>/<time>) or a sweep folder "
                        f"(outputs/multirun/<date>/<time>).")
    here = (path / METRICS_FILE).exists() or (path / CHECKPOINT_FILE).exists()
    dirs = [path] if here else sorted({p.parent for name in (METRICS_FILE, CHECKPOINT_FILE) for p in path.rglob(name)})
    if not dirs:
        raise UserError(f"{path} holds no runs: no {METRICS_FILE} in it or below it. Give a run folder "
                        f"(outputs/<date>/<time>) or a sweep folder (outputs/multirun/<date>/<time>).")
    return [RunRecord(d, read_overrides(d), _metrics_of(d)) for d in dirs]


def _metrics_of(run_dir: Path) -> RunMetrics:
    """What a run folder says of its run; one that cannot say is a run of status "unreadable" or, with a checkpoint
    and no metrics.json (a process killed outright), "resumable": one bad run never spoils a sweep's report."""
    if not (run_dir / METRICS_FILE).exists():
        return RunMetrics(status="resumable", error=f"no {METRICS_FILE}: the process was killed; its {CHECKPOINT_FILE} "
                                                    f"goes on with: diagnose train resume={run_dir}")
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:  # truncated, not an object, wrong types
        return RunMetrics(status="unreadable", error=f"{METRICS_FILE} cannot be read ({type(err).__name__}: {err})")


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """The override keys whose value differs between the runs, in command-line order."""
    keys: dict[str, set] = {}
    for run in runs:
        for key, value in run.overrides.items():
            keys.setdefault(key, set()).add(repr(value))
    return [key for key, values in keys.items() if len(values) > 1 or any(key not in r.overrides for r in runs)]
