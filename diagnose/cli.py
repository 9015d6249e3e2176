"""The `diagnose` command: subcommands dispatched to Hydra apps. The only module that imports Hydra.

Hydra has no subcommands (hydra #215), so the console script pops the subcommand from argv, picks that
subcommand's primary config and calls the matching @hydra.main function with the remaining arguments:
`-m`, overrides, --help and tab completion all keep working.
"""

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from diagnose.errors import UserError

EXIT_CODES = {"completed": 0, "diverged": 1, "interrupted": 130}
USER_ERROR_EXIT = 2


def config_dir() -> Path:
    """The configs: packaged inside the wheel, else the repository's top-level conf/ (editable install)."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


def _fail(message: str) -> None:
    from diagnose.training.console import console

    console.print(f"[bold red]Error:[/] {message}", highlight=False)


def _train(cfg: DictConfig) -> float | None:
    from diagnose.build import build_run
    from diagnose.training.console import print_summary
    from diagnose.training.loop import train

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        run = build_run(cfg)
    except UserError as err:
        _fail(str(err))
        if multirun:  # the sweep goes on; this job's folder records why it failed
            from diagnose.training.outputs import write_metrics

            write_metrics(out_dir, {"status": "failed", "error": str(err),
                                    "config": OmegaConf.to_container(cfg, resolve=True)})
            return None
        _remove_run_dir(out_dir)  # nothing was trained: leave no half-made run behind
        sys.exit(USER_ERROR_EXIT)
    metrics = train(run, out_dir, OmegaConf.to_container(cfg, resolve=True))
    print_summary(metrics, str(out_dir))
    if metrics["status"] != "completed" and not multirun:
        sys.exit(EXIT_CODES[metrics["status"]])
    return metrics["final"].get("val_acc")


def _remove_run_dir(out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    parent = out_dir.parent  # the date folder Hydra made for it, when it is now empty
    if parent.name != "outputs" and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


SUBCOMMANDS: dict[str, tuple[str, Callable[[DictConfig], object], str]] = {
    "train": ("train", _train, "build a network from components, train it, log diagnostics"),
}


def _usage() -> str:
    lines = ["usage: diagnose <command> [overrides] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Each command takes Hydra overrides (e.g. `diagnose train norm=gn batch=4`),",
              "-m for a sweep, and --help for its config groups and options."]
    return "\n".join(lines)


def _name_jobs_by_swept_keys(args: list[str]) -> list[str]:
    """In a sweep, name each job's folder by the keys that vary only (`batch=4,norm=gn`), not by every
    override on the command line: the fixed ones are the same for all jobs and would drown them."""
    if "-m" not in args and "--multirun" not in args:
        return args
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except HydraException:
        return args  # Hydra itself reports the malformed override
    fixed = [o.key_or_group for o in overrides if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    if not fixed or len(fixed) == len(overrides):
        return args
    return [*args, f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else USER_ERROR_EXIT)
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        _fail(f"unknown command '{command}'. Valid commands: {', '.join(SUBCOMMANDS)}. "
              f"Run `diagnose --help` for usage.")
        sys.exit(USER_ERROR_EXIT)
    config_name, task, _ = SUBCOMMANDS[command]
    sys.argv = [f"diagnose-{command}", *_name_jobs_by_swept_keys(rest)]  # Hydra reads sys.argv; argv[0] names the job
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()
