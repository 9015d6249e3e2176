"""`hydra/sweeper=diagnose`, diagnose's default: Hydra's basic sweeper, less its second check of every job.

Before the first job of a sweep starts, Hydra's basic sweeper composes every job's config (~0.15 s a job, one after
the other: 10 s before a 64-job sweep starts) to find one that cannot run. The diagnose command line has checked those
jobs already, against the schema (diagnose/cli/overrides.py), so here Hydra composes only the jobs that check did not
see, and one job for the `hydra.*` settings, which it leaves to Hydra. Like the launcher, this module is loaded by
Hydra's plugin scan in every process that starts Hydra: it imports nothing heavy; its config lives in
diagnose/cli/schema.py.
"""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class CheckedSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from diagnose.cli.overrides import checked_already

        settings_of_hydra = {tuple(o for o in job if o.lstrip("+").startswith("hydra")) for job in batch}
        if len(settings_of_hydra) > 1:  # a swept hydra.* setting: each of its values gets composed
            return super().validate_batch_is_legal(batch)
        unchecked = [job for job in batch if not checked_already(job)]
        return super().validate_batch_is_legal(unchecked or batch[:1])
