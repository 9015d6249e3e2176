"""The `diagnose` command: subcommands dispatched to Hydra apps. The only module that imports Hydra.

Hydra has no subcommands (hydra #215), so the console script pops the subcommand from argv, picks that
subcommand's primary config and calls the matching @hydra.main function with the remaining arguments:
`-m`, overrides, --help and tab completion all keep working.
"""

import difflib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
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

    console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)  # one line: greppable


def _run_task(cfg: DictConfig, work: Callable[[DictConfig, Path], dict]) -> float | None:
    """Run `work(cfg, out_dir)` as one Hydra job, with the error handling a user expects of it."""
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            metrics = work(cfg, out_dir)
        except UserError as err:
            _fail(str(err))
            _remove_run_dir(out_dir)  # nothing was made: leave no half-made run behind
            sys.exit(USER_ERROR_EXIT)
        except KeyboardInterrupt:  # Ctrl-C outside the training steps, which handle it themselves
            _fail("interrupted.")
            _remove_run_dir(out_dir)
            sys.exit(EXIT_CODES["interrupted"])
        if metrics["status"] != "completed":
            sys.exit(EXIT_CODES[metrics["status"]])
        return metrics.get("final", {}).get("val_acc")

    # In a sweep one job's failure must not stop the others (Hydra aborts the sweep on an exception): the
    # job's folder records why it failed, and the sweep summary lists it.
    _share_cores(hydra_cfg)
    try:
        metrics = work(cfg, out_dir)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, whatever its kind
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        _fail(f"job {out_dir.name} failed: {message}")
        if not isinstance(err, UserError):
            logging.getLogger(__name__).exception("job %s failed", out_dir.name)  # the traceback, in the job log
        from diagnose.training.outputs import write_metrics

        write_metrics(out_dir, {"status": "failed", "error": message,
                                "config": OmegaConf.to_container(cfg, resolve=True)})
        return None
    if metrics["status"] == "interrupted":  # Ctrl-C or SIGTERM stops the whole sweep, not just this job
        sys.exit(EXIT_CODES["interrupted"])
    return metrics.get("final", {}).get("val_acc")


def _train(cfg: DictConfig) -> float | None:
    def work(cfg: DictConfig, out_dir: Path) -> dict:
        from diagnose.build import build_run
        from diagnose.training.console import print_summary
        from diagnose.training.loop import train

        if cfg.resume is None:
            metrics = train(build_run(cfg), out_dir, OmegaConf.to_container(cfg, resolve=True))
        else:
            checkpoint, run_dir = _resumable(cfg)
            metrics = train(build_run(OmegaConf.create(checkpoint["config"])), run_dir, checkpoint["config"],
                            resume=checkpoint)
            _remove_run_dir(out_dir)  # the folder Hydra made for this command: the run goes on in its own
            out_dir = run_dir
        print_summary(metrics, str(out_dir))
        return metrics

    return _run_task(cfg, work)


def _resumable(cfg: DictConfig) -> tuple[dict, Path]:
    """The checkpoint to resume and its folder, once it is known that this command line does not ask for a
    different run than the checkpoint's: resuming continues a run exactly as it was configured."""
    from diagnose.training.outputs import load_checkpoint

    run_dir = Path(cfg.resume)
    checkpoint = load_checkpoint(run_dir)
    saved = OmegaConf.create(checkpoint["config"])
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    different = []
    for override in overrides:
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        given, before = _plain(OmegaConf.select(cfg, key)), _plain(OmegaConf.select(saved, key))
        if given != before:
            different.append(f"{key} (the run has {before}, the command line {given})")
    if different:
        raise UserError(f"resume={run_dir} continues that run as it was configured, but the command line changes "
                        f"{'; '.join(different)}. Drop those overrides, or start a new run.")
    status = _status_of(run_dir)
    if status in ("completed", "diverged"):
        raise UserError(f"resume={run_dir}: that run {status} ({checkpoint['step']} steps); only an interrupted "
                        f"run can be resumed. Start a new run (after a divergence: with a lower lr).")
    return checkpoint, run_dir


def _plain(value: object) -> object:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _status_of(run_dir: Path) -> str | None:
    from diagnose.training.outputs import read_metrics

    try:
        return read_metrics(run_dir).get("status")
    except (OSError, ValueError):  # no metrics.json: killed outright, resumable from its last checkpoint
        return None


def _probe(cfg: DictConfig) -> None:
    from diagnose.probe import probe

    _run_task(cfg, probe)


def _share_cores(hydra_cfg: DictConfig) -> None:
    """Jobs running side by side (joblib) each get their share of the cores: two torch processes that each
    spin up every core's worth of threads slow each other down several-fold."""
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if n_jobs:
        import torch

        cores = os.cpu_count() or 1
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        torch.set_num_threads(max(1, cores // parallel))


class DiagnoseCallbacks(Callback):
    """Hydra callbacks: check the output folder before Hydra makes it, and sum a sweep up at its end."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        _check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        _check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        """In the launching process, after every job: sensitivity curves, HParams, summary.csv, table."""
        from diagnose.sweep.summary import summarise_sweep

        try:
            summarise_sweep(Path(config.hydra.sweep.dir))
        except UserError as err:  # e.g. every job failed before writing anything
            _fail(f"no sweep summary: {err}")


def _check_writable(folder: str, key: str) -> None:
    """Hydra would fail to make an unwritable output folder with a traceback; say it in one paragraph."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".diagnose-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        _fail(f"cannot write the run's output folder {path} ({err.strerror}). Run from a folder you can write "
              f"to, or set {key}=<a writable folder>.")
        sys.exit(USER_ERROR_EXIT)


def _remove_run_dir(out_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra put there (its config and log): a failure before
    anything was made. A folder with results in it is kept, whatever happened."""
    made = [p for p in out_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]
    if made:
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    parent = out_dir.parent  # the date folder Hydra made for it, when it is now empty
    if parent.name != "outputs" and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _report(argv: list[str]) -> None:
    from diagnose.report import main as report_main

    try:
        report_main(argv)
    except UserError as err:
        _fail(str(err))
        sys.exit(USER_ERROR_EXIT)


# Hydra apps: command -> (primary config, task function, help)
SUBCOMMANDS: dict[str, tuple[str, Callable[[DictConfig], object], str]] = {
    "train": ("train", _train, "build a network from components, train it, log diagnostics"),
    "probe": ("probe", _probe, "one batch through the network at initialisation: signal per layer, no training"),
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
    exclude = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"
    last = max(i for i, a in enumerate(args) if "=" in a and not a.startswith("-"))
    return [*args[:last + 1], exclude, *args[last + 1:]]  # beside the other overrides: argparse wants them together


def _check_choices(config_name: str, args: list[str]) -> None:
    """Catch the commonest slips, an option that does not exist (`norm=batchnorm`) and a misspelt setting
    (`batchsize=4`), before Hydra does: its own report spans a dozen lines of config search paths."""
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except HydraException:
        return  # Hydra itself reports the malformed override
    root = config_dir()
    primary = OmegaConf.load(root / f"{config_name}.yaml")
    groups = sorted(key for entry in primary.defaults if isinstance(entry, DictConfig) for key in entry)
    settings = [key for key in primary if key not in ("defaults", "hydra", *groups)]
    for override in overrides:
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or key.startswith("hydra"):
            continue
        if key in groups:
            options = sorted(p.stem for p in (root / key).glob("*.yaml"))
            given = list(override.sweep_string_iterator()) if override.is_sweep_override() else [
                override.get_value_element_as_str()]
            for value in given:
                if value not in options:
                    _fail(f"{key}={value}: there is no {key} option '{value}'.{_did_you_mean(value, options)} "
                          f"Valid options: {', '.join(options)}.")
                    sys.exit(USER_ERROR_EXIT)
        elif "." not in key and key not in settings:
            _fail(f"'{key}' is not a setting of `diagnose {config_name}`.{_did_you_mean(key, settings + groups)} "
                  f"Settings: {', '.join(sorted(settings))}; component groups (pick with group=option): "
                  f"{', '.join(groups)}.")
            sys.exit(USER_ERROR_EXIT)


def _did_you_mean(given: str, known: list[str]) -> str:
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(given.lower(), list(by_lower), n=1)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else USER_ERROR_EXIT)
    command, rest = argv[0], argv[1:]
    if command in PLAIN_COMMANDS:
        return PLAIN_COMMANDS[command][0](rest)
    if command not in SUBCOMMANDS:
        _fail(f"unknown command '{command}'. Valid commands: {', '.join([*SUBCOMMANDS, *PLAIN_COMMANDS])}. "
              f"Run `diagnose --help` for usage.")
        sys.exit(USER_ERROR_EXIT)
    config_name, task, _ = SUBCOMMANDS[command]
    _check_choices(config_name, rest)
    sys.argv = [f"diagnose-{command}", *_name_jobs_by_swept_keys(rest)]  # Hydra reads sys.argv; argv[0] names the job
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()
