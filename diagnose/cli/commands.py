"""The `diagnose` command: subcommands dispatched to Hydra apps.

Hydra has no subcommands (hydra #215), so the console script pops the subcommand from argv, picks that
subcommand's primary config and calls the matching @hydra.main function with the remaining arguments:
`-m`, overrides and tab completion (`_complete`) all keep working. The command line is checked against the schema
first, so that a mistake is one line and no run folder is made for it.
"""

import contextlib
import glob
import io
import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import fields

import hydra
from omegaconf import DictConfig, OmegaConf

from diagnose.cli import config_dir
from diagnose.cli.callbacks import SWEEP
from diagnose.cli.exits import USER_ERROR_EXIT, fail
from diagnose.cli.jobs import check_job, probe_job, train_job
from diagnose.config import COMMANDS, to_dict
from diagnose.errors import UserError


def _report(argv: list[str]) -> None:
    from diagnose.report import main as report_main

    report_main(argv)


# Hydra apps: command -> (task function, help)
SUBCOMMANDS: dict[str, tuple[Callable[[DictConfig], object], str]] = {
    "train": (train_job, "build a network from components, train it, log diagnostics"),
    "probe": (probe_job, "one batch through the network at initialisation: signal per layer, no training"),
    "check": (check_job, "the sanity checks before training (loss at init, overfit a batch, ...), ~a minute"),
}

# Plain commands that take their own arguments: command -> (main(argv), help)
PLAIN_COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "report": (_report, "tables (or --json) of a run's or a sweep's results: diagnose report PATH"),
}

EXAMPLES = {
    "train": ["diagnose train norm=gn batch=4", "diagnose train -m norm=bn,gn batch=2,4,8,16,32",
              "diagnose train model=mlp model.depth=20 act=sigmoid init=normal init.std=1.0"],
    "check": ["diagnose check data=fashion_mnist", "diagnose check init=zeros   # fails: cannot overfit one batch"],
    "probe": ["diagnose probe init=normal init.std=1.0           # exploding",
              "diagnose probe act=tanh init=normal init.std=0.01  # vanishing",
              "diagnose probe -m init=normal,xavier_normal,kaiming_normal act=relu,tanh"],
}


def _usage() -> str:
    lines = ["usage: diagnose <command> [overrides] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in PLAIN_COMMANDS.items()]
    lines += ["", "Each command takes Hydra overrides (e.g. `diagnose train norm=gn batch=4`),",
              "-m for a sweep, and --help for its config groups and options.",
              'Tab completion in bash: eval "$(diagnose -sc install=bash)".']
    return "\n".join(lines)


PATH_KEYS = ("resume=", "hydra.run.dir=", "hydra.sweep.dir=")  # keys whose value is one folder, never a sweep


def quote_path(arg: str) -> str:
    """`resume=<run folder>` (and an output folder) quoted for Hydra, whose grammar takes the `=` and `,` of folder
    names such as `20-51-40_act=sigmoid,norm=none` (and a sweep job's `batch=4,norm=gn`) for syntax."""
    if not arg.startswith(PATH_KEYS):
        return arg
    key, _, value = arg.partition("=")
    if value == "":  # Hydra would take '' for the current folder: a run written among the user's own files
        raise UserError(f"{arg} is empty: give a folder (e.g. {key}=outputs/2026-12-01/10-00-00), or leave {key} "
                        f"out.")
    if value[:1] in ("'", '"') or value == "null" or "${" in value:  # ${now:...}: Hydra resolves it
        return arg
    return f"{key}='{value.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"


def command_help(command: str, overrides: list[str]) -> str:
    """What `diagnose <command> --help` prints: examples, the groups and their options, the config it would run."""
    from diagnose.cli.overrides import composed, groups_and_options

    lines = [f"diagnose {command}: {SUBCOMMANDS[command][1]}", "", "Examples:"]
    lines += [f"  {example}" for example in EXAMPLES[command]]
    lines += ["", "Component groups (pick one option with group=option):"]
    lines += [f"  {group}: {', '.join(options)}" for group, options in groups_and_options(command).items()]
    try:
        config = OmegaConf.to_yaml(to_dict(composed(command, overrides)))
        lines += ["", "The config this command line runs (change a value with key=value, e.g. norm.groups=4):", "",
                  config]
    except UserError:  # a sweep's overrides: there is no one config to show
        pass
    lines += ["Hydra's own options: --hydra-help. Sweep: -m key=a,b,c."]
    return "\n".join(lines)


COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETION_REQUEST = re.compile(r"^(install|uninstall|query)=(bash|zsh|fish)$")


def _complete(argv: list[str]) -> None:
    """Hydra's tab completion for `diagnose <command> ...` (README: how to install it in bash, zsh or fish). Hydra
    completes one app's command line, so the script it installs calls `diagnose -sc query=<shell>` with the line
    being typed in COMP_LINE: while the command is typed, it is completed here; after it, the rest of the line goes
    to that command's Hydra app as if it were the whole line."""
    flag = next(arg for arg in argv if arg in COMPLETION_FLAGS)
    request = next((arg for arg in argv if COMPLETION_REQUEST.match(arg)), None)
    if request is None:
        raise UserError(f"{flag} takes install=<shell>, uninstall=<shell> or query=<shell>, the shell one of bash, "
                        f"zsh or fish: e.g. eval \"$(diagnose {flag} install=bash)\".")
    if not request.startswith("query="):  # install or uninstall: Hydra's script, for the program `diagnose`
        return _run_hydra_app("train", ["diagnose", flag, request])
    fish = request == "query=fish"  # fish reads an offer a line; bash and zsh, words
    line = os.environ.get("COMP_LINE", "")
    point = os.environ.get("COMP_POINT", "")
    line = line[:int(point)] if point.isdigit() else line  # up to the cursor
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line[-1:].isspace()):  # the command is being typed
        typed = words[1] if len(words) == 2 else ""
        offers = [name for name in [*SUBCOMMANDS, *PLAIN_COMMANDS] if name.startswith(typed)]
    elif words[1] in SUBCOMMANDS:
        offers = _settings_offered(words[1], line, request)
    elif words[1] in PLAIN_COMMANDS and fish:  # report takes a folder: bash and zsh complete paths themselves
        typed = "" if line[-1:].isspace() else words[-1]
        offers = [path + ("/" if os.path.isdir(path) else "") for path in sorted(glob.glob(glob.escape(typed) + "*"))]
    else:
        offers = []
    print(("\n" if fish else " ").join(offers))
    return None


def _settings_offered(command: str, line: str, request: str) -> list[str]:
    """What Hydra offers to complete `line` (`diagnose <command> ...`), as for an app of that command alone."""
    from diagnose.cli import hand_the_schema_to_hydra

    hand_the_schema_to_hydra()
    typed = re.match(r"\s*\S+\s+\S+\s?(.*)", line, re.S).group(1)  # the line after `diagnose <command>`
    before = os.environ.get("COMP_LINE")
    os.environ["COMP_LINE"] = f"diagnose-{command} {_readable_words(typed)}"
    try:  # a line Hydra cannot read offers nothing: no message in the middle of the line being typed
        with contextlib.redirect_stdout(io.StringIO()) as said, contextlib.redirect_stderr(io.StringIO()):
            _run_hydra_app(command, [f"diagnose-{command}", "-sc", request])
    except SystemExit:
        return []
    finally:
        if before is None:
            del os.environ["COMP_LINE"]
        else:
            os.environ["COMP_LINE"] = before
    offers = said.getvalue().splitlines() if request == "query=fish" else said.getvalue().split()
    # Hydra offers every config group it can see: the schema's own and the other commands' groups go
    keys = {field.name for field in fields(COMMANDS[command])} | {"hydra"}
    return [offer for offer in offers if re.split(r"[=./]", offer.lstrip("+~"))[0] in keys]


def _readable_words(typed: str) -> str:
    """The line being completed as Hydra's completion reads it, words split at spaces and parsed as overrides: the
    shell's quotes taken off (README's own 'lr=interval(0.001,0.5)'), and a word that is no override Hydra can read
    (`batch`, `batch=[`) left out, as it cannot say what to offer next."""
    *done, current = typed.split(" ") if typed else [""]
    try:
        words = shlex.split(" ".join(done))
    except ValueError:  # an unclosed quote
        words = " ".join(done).split()
    kept = []
    for word in words:
        if word.startswith("-") or (not re.search(r"\s", word) and _readable(word)):
            kept.append(word)
    return " ".join([*kept, current.lstrip("'\"")])


def _readable(word: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([word])
    except HydraException:
        return False
    return True


def _run_hydra_app(command: str, argv: list[str]) -> None:
    """Run `diagnose <command>`'s Hydra app on `argv`, the command line Hydra reads (argv[0] names the job)."""
    before, sys.argv = sys.argv, argv
    try:
        hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(SUBCOMMANDS[command][0])()
    finally:
        sys.argv = before


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in COMPLETION_FLAGS for arg in argv):
        try:
            return _complete(argv)
        except UserError as err:
            fail(str(err))
            sys.exit(USER_ERROR_EXIT)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else USER_ERROR_EXIT)
    command = argv[0]
    try:
        rest = [quote_path(arg) for arg in argv[1:]]
        if command in PLAIN_COMMANDS:
            return PLAIN_COMMANDS[command][0](rest)
        if command not in SUBCOMMANDS:
            known = ", ".join([*SUBCOMMANDS, *PLAIN_COMMANDS])
            raise UserError(f"unknown command '{command}'. Valid commands: {known}. Run `diagnose --help` for usage.")
        from diagnose.cli.overrides import check_command_line, name_jobs_by_swept_keys, with_targets  # not for report

        rest = with_targets(rest)
        check_command_line(command, rest)
        if "-h" in rest or "--help" in rest:
            print(command_help(command, [a for a in rest if "=" in a and not a.startswith("-")]))
            return None
    except UserError as err:
        fail(str(err))
        sys.exit(USER_ERROR_EXIT)
    # -m first: Hydra's argparse wants the overrides side by side, and users put -m anywhere
    rest = [a for a in rest if a in ("-m", "--multirun")] + [a for a in rest if a not in ("-m", "--multirun")]
    # argv[0] names the job; Hydra's own help names it as the program that its shell completion calls: `diagnose`
    program = "diagnose" if "--hydra-help" in rest else f"diagnose-{command}"
    _run_hydra_app(command, [program, *name_jobs_by_swept_keys(rest)])
    if SWEEP["code"]:  # a sweep goes on past a failed or diverged job; its exit code says it had them
        fail(str(SWEEP["message"]))
        sys.exit(SWEEP["code"])
