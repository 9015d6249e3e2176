"""The findings of a target, as its files hold them: a run's from its metrics.json; a sweep's own from its
findings.json, and its jobs' gathered by rule. No rule or text is known here: whatever the files say is shown."""

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from diagnose.files import FINDINGS_JSON
from diagnose.results import Finding, RunMetrics
from diagnose.tab.targets import SWEEP, Target

SEVERITIES = ("error", "warning", "info")  # the order of the jobs' rules; any other severity comes last


@dataclass
class JobFinding:
    job: str
    finding: Finding


@dataclass
class RuleFindings:
    """One rule over a sweep's jobs: each job's finding, the most severe first."""

    rule: str
    severity: str
    jobs: list[JobFinding]


@dataclass
class Unfinished:
    """A run that did not complete: diverged, interrupted, failed; and why, as its metrics.json says."""

    job: str | None  # a sweep's job; None: the run itself
    status: str
    why: str


@dataclass
class FindingsView:
    own: list[Finding]  # the run's, or the sweep's own, in the order their writer gave them (errors first)
    jobs: list[RuleFindings] = field(default_factory=list)  # a sweep: its jobs' findings by rule
    job_count: int = 1  # a sweep's jobs
    sweep_file: bool = True  # a sweep: whether its findings.json was there (a sweep still running has none)
    unfinished: list[Unfinished] = field(default_factory=list)


def findings_view(target: Target) -> FindingsView:
    unfinished = [Unfinished(run.path.name if target.kind == SWEEP else None, run.status, _why(run.metrics))
                  for run in target.runs if run.status != "completed"]
    if target.kind != SWEEP:
        return FindingsView(target.runs[0].metrics.findings, unfinished=unfinished)
    path = target.path / FINDINGS_JSON
    own = _read(path) if path.exists() else []
    by_rule: dict[str, RuleFindings] = {}
    for run in target.runs:
        for finding in run.metrics.findings:
            group = by_rule.setdefault(finding.rule, RuleFindings(finding.rule, finding.severity, []))
            group.jobs.append(JobFinding(run.path.name, finding))
            group.severity = min(group.severity, finding.severity, key=_rank)
    groups = sorted(by_rule.values(), key=lambda g: (_rank(g.severity), -len(g.jobs), g.rule))
    for group in groups:
        group.jobs.sort(key=lambda j: _rank(j.finding.severity))
    return FindingsView(own, groups, job_count=len(target.runs), sweep_file=path.exists(), unfinished=unfinished)


def _why(metrics: RunMetrics) -> str:
    if metrics.nonfinite is not None:
        return metrics.nonfinite.describe()
    return metrics.error or ""


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _read(path: Path) -> list[Finding]:
    """findings.json: a list of Finding objects (keys a newer writer may add are left out)."""
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    known = {f.name for f in fields(Finding)}
    return [Finding(**{k: v for k, v in item.items() if k in known}) for item in items if isinstance(item, dict)]
