"""The `diagnose` command: subcommands dispatched to Hydra apps.

Hydra has no subcommands (hydra #215), so the console script pops the subcommand from argv, picks that
subcommand's primary config and calls the matching @hydra.main function with the remaining arguments:
`-m`, overrides, --help and tab completion all keep working.
"""

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from diagnose.cli import config_dir
from diagnose.cli.exits import USER_ERROR_EXIT, fail
from diagnose.cli.jobs import probe_job, train_job
from diagnose.cli.overrides import check_choices, name_jobs_by_swept_keys
from diagnose.errors import UserError


def _report(argv: list[str]) -> None:
    from diagnose.report import main as report_main

    try:
        report_main(argv)
    except UserError as err:
        fail(str(err))
        sys.exit(USER_ERROR_EXIT)


# Hydra apps: command -> (primary config, task function, help)
SUBCOMMANDS: dict[str, tuple[str, Callable[[DictConfig], object], str]] = {
    "train": ("train", train_job, "build a network from components, train it, log diagnostics"),
    "probe": ("probe", probe_job, "one batch through the network at initialisation: signal per layer, no training"),
}


# Plain commands that take their own arguments: command -> (main(argv), help)
PLAIN_COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "report": (_report, "tables (or --json) of a run's or a sweep's results: diagnose report PATH"),
}


def _usage() -> str:
    lines = ["usage: diagnose <command> [overrides] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in PLAIN_COMMANDS.items()]
    lines += ["", "Each command takes Hydra overrides (e.g. `diagnose train norm=gn batch=4`),",
              "-m for a sweep, and --help for its config groups and options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else USER_ERROR_EXIT)
    command, rest = argv[0], argv[1:]
    if command in PLAIN_COMMANDS:
        return PLAIN_COMMANDS[command][0](rest)
    if command not in SUBCOMMANDS:
        fail(f"unknown command '{command}'. Valid commands: {', '.join([*SUBCOMMANDS, *PLAIN_COMMANDS])}. "
             f"Run `diagnose --help` for usage.")
        sys.exit(USER_ERROR_EXIT)
    config_name, task, _ = SUBCOMMANDS[command]
    check_choices(config_name, rest)
    sys.argv = [f"diagnose-{command}", *name_jobs_by_swept_keys(rest)]  # Hydra reads sys.argv; argv[0] names the job
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()

