"""The overrides of a command line: checked before Hydra sees them, and a sweep's jobs named by them."""

import difflib
import sys

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from diagnose.cli import config_dir
from diagnose.cli.exits import USER_ERROR_EXIT, fail


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _parsed(args: list[str]) -> list[Override] | None:
    """The overrides among `args`, or None when one is malformed: Hydra itself reports that."""
    try:
        return OverridesParser.create().parse_overrides([a for a in args if _is_override(a)])
    except HydraException:
        return None


def check_choices(config_name: str, args: list[str]) -> None:
    """Catch the commonest slips, an option that does not exist (`norm=batchnorm`) and a misspelt setting
    (`batchsize=4`), before Hydra does: its own report spans a dozen lines of config search paths."""
    overrides = _parsed(args)
    if overrides is None:
        return
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
            if not override.is_sweep_override():
                given = [override.get_value_element_as_str()]
            elif isinstance(override.value(), ChoiceSweep):
                given = list(override.sweep_string_iterator())
            else:
                continue  # glob(...) picks among the options that exist
            for value in given:
                if value not in options:
                    fail(f"{key}={value}: there is no {key} option '{value}'.{_did_you_mean(value, options)} "
                         f"Valid options: {', '.join(options)}.")
                    sys.exit(USER_ERROR_EXIT)
        elif "." not in key and key not in settings:
            fail(f"'{key}' is not a setting of `diagnose {config_name}`.{_did_you_mean(key, settings + groups)} "
                 f"Settings: {', '.join(sorted(settings))}; component groups (pick with group=option): "
                 f"{', '.join(groups)}.")
            sys.exit(USER_ERROR_EXIT)


def _did_you_mean(given: str, known: list[str]) -> str:
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(given.lower(), list(by_lower), n=1)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def name_jobs_by_swept_keys(args: list[str]) -> list[str]:
    """In a sweep, name each job's folder by the keys that vary only (`batch=4,norm=gn`), not by every
    override on the command line: the fixed ones are the same for all jobs and would drown them."""
    if "-m" not in args and "--multirun" not in args:
        return args
    overrides = _parsed(args)
    if overrides is None:
        return args
    fixed = [o.key_or_group for o in overrides if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    if not fixed or len(fixed) == len(overrides):
        return args
    exclude = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"
    last = max(i for i, a in enumerate(args) if _is_override(a))
    return [*args[:last + 1], exclude, *args[last + 1:]]  # beside the other overrides: argparse wants them together
