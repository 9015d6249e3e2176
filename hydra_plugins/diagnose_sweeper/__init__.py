"""`hydra/sweeper=diagnose`, diagnose's default: Hydra's basic sweeper, less its second check of every job.

Before the first job of a sweep starts, Hydra's basic sweeper composes every job's config (~0.1 s a job, one after
the other: 6 s before a 64-job sweep starts) to find one that cannot run. The diagnose command line has checked those
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

        command = self.config.hydra.job.config_name
        unchecked = [job for job in batch if not checked_already(command, job)]
        # one job at least: its composition applies the command line's hydra.* settings (Hydra keeps them out of the
        # jobs' overrides, and refuses to sweep them), which diagnose's check leaves to Hydra
        super().validate_batch_is_legal(unchecked or batch[:1])
