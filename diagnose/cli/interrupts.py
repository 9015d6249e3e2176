"""A command with no resume (probe, check) stopped by Ctrl-C or a SIGTERM (a scheduler's, `kill`): it stops at once,
says so, and leaves no half-made folder."""

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from diagnose.cli.exits import EXIT_CODES, fail
from diagnose.cli.ownership import release

Result = TypeVar("Result")


def at_once(work: Callable[[object, Any], Result], what: str) -> Callable[[object, Any], Result]:
    """A job's `work(cfg, job)` (job: a jobs.Job), run `stopped_at_once` in the job's folder."""

    def stoppable(cfg: object, job: Any) -> Result:
        with stopped_at_once(job.out_dir, what):
            return work(cfg, job)

    return stoppable


@contextmanager
def stopped_at_once(out_dir: Path, what: str) -> Iterator[None]:
    """While `what` runs, SIGINT and SIGTERM stop it at once; its folder goes, and the exit code is 130, as for an
    interrupted run (SIGTERM's default would kill it outright: exit 143, no word, the folder half-written)."""
    from diagnose.training.stop import StopRequests

    try:
        with StopRequests() as stop, stop.at_once():
            yield
    except KeyboardInterrupt:
        fail(f"interrupted: the {what} stopped before it finished and is not kept (it has nothing to resume); run "
             f"the same command again.")
        release(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        cwd = Path.cwd().resolve()
        for parent in Path(out_dir).resolve().parents:  # outputs/probe/<date> and up, made for it, when now empty
            if parent == cwd or not parent.is_relative_to(cwd) or any(parent.iterdir()):
                break
            parent.rmdir()
        sys.exit(EXIT_CODES["interrupted"])
