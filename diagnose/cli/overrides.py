"""The overrides of a command line: checked against the schema before Hydra runs anything, and a sweep's jobs
named by them."""

import difflib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, Override, Sweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException, ValidationError

from diagnose import checks
from diagnose.cli import config_dir, hand_the_schema_to_hydra
from diagnose.cli.schema import LAUNCHER_LEAST
from diagnose.components.targets import DECLARED, TARGET, TARGET_GROUPS, find_class
from diagnose.config import COMMANDS, GROUPS
from diagnose.errors import UserError

hand_the_schema_to_hydra()

# A sweep of up to this many jobs has every job's config checked before the first starts (Hydra composes one for each
# combination of component options, ~0.1 s each, and the other values are set into it, ~1 ms a job); a larger one
# value by value (each swept value with the others' first), which finds every value that cannot be right whatever
# the other keys hold.
CHECKED_JOBS = 64
MOST_JOBS = 10_000  # a sweep of more is surely a slip (seed=range(0,1000000)): checking its values alone takes minutes
TYPE_WORDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false"}
_checked: set[tuple[str, tuple[str, ...]]] = set()  # (command, job) the last check found fit to run, hydra.* aside


def _is_override(arg: str) -> bool:
    return ("=" in arg or arg.startswith("~")) and not arg.startswith("-")


def _parsed(args: list[str]) -> list[Override] | None:
    """The overrides among `args`, or None when one is malformed (`_check_grammar` says which)."""
    try:
        return OverridesParser.create().parse_overrides([a for a in args if _is_override(a)])
    except HydraException:
        return None


# Hydra's own options that take a value (`--config-name train`): that value is not an override
VALUED_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p", "--cfg",
                "-c", "--info", "-i", "--experimental-rerun")


def _check_grammar(command: str, args: list[str]) -> None:
    """A word without a value (`batch`) or an override Hydra's grammar cannot read (`lr=0.1)`, `batch=[`), said in
    one paragraph with what is valid: Hydra's own report is four lines that name neither."""
    for before, arg in zip(["", *args], args, strict=False):
        if arg.startswith("-") or before in VALUED_FLAGS:
            continue
        if "=" not in arg and not arg.startswith("~"):  # `~key` deletes: `_check_names` says why it cannot
            raise UserError(f"'{arg}' has no value: a setting is key=value (e.g. batch=64), a component group "
                            f"group=option (e.g. norm=gn). {_valid(command)}")
        try:
            OverridesParser.create().parse_overrides([arg])
        except HydraException as err:
            said = next((f" ({line.strip()})" for line in str(err).splitlines() if line.strip(" ^")
                         and not line.startswith(("Error parsing override", "See "))), "")
            raise UserError(f"{arg}: Hydra's override grammar cannot read this{said}. A value is a number, a word, "
                            f"a list [1,2] or a sweep a,b,c; one with spaces, brackets, parentheses or commas of its "
                            f"own goes in quotes inside the shell's quotes, e.g. data.root='\"my data\"'. "
                            f"{_valid(command)}") from None


def _valid(command: str) -> str:
    """What `diagnose <command>` takes: its settings and its component groups."""
    return (f"Settings: {', '.join(sorted(settings_of(command)))}; component groups (pick with group=option): "
            f"{', '.join(groups_and_options(command))}. `diagnose {command} --help` shows every value.")


def groups_and_options(command: str) -> dict[str, list[str]]:
    """The component groups of `diagnose <command>`, each with its options (the yaml files of conf/<group>)."""
    chosen = {field.name for field in fields(COMMANDS[command])} & set(GROUPS)
    return {group: sorted(p.stem for p in (config_dir() / group).glob("*.yaml")) for group in sorted(chosen)}


def settings_of(command: str) -> list[str]:
    """The top-level keys of `diagnose <command>` that are values, not component groups."""
    return [field.name for field in fields(COMMANDS[command]) if field.name not in GROUPS]


def check_command_line(command: str, args: list[str]) -> None:
    """Raise a UserError, one paragraph, for a command line that cannot run: an option or setting that does not
    exist, a value of the wrong type or out of range, for a single run and for every value a sweep takes."""
    _checked.clear()  # first: a command line that does not pass leaves no job checked
    _check_grammar(command, args)
    overrides = _parsed(args)
    _check_names(command, overrides)
    _check_launcher(overrides)
    _check_hydra_settings(command, overrides)
    groups, bases = groups_and_options(command), {}
    for job in _jobs_to_check(overrides):
        _check_targets(job)
        choice = tuple(o for o in job if o.split("=")[0] in groups)  # the job's component options: norm=gn, ...
        if choice not in bases:
            bases[choice] = _composed_config(command, job)
            _as_objects(bases[choice])  # checked as `composed` checks: its error, if any, is raised
        elif not _fits(bases[choice], [o for o in job if o not in choice]):
            composed(command, job)  # raises the error, worded as for a single run
        if not any(o.startswith("~") for o in job):  # a deletion: `_fits` leaves it out, Hydra checks it
            _checked.add((command, _settings(job)))


def checked_already(command: str, job: Sequence[str]) -> bool:
    """Whether the command line's check found this job of `diagnose <command>` (a sweep job's overrides, as Hydra's
    sweeper lists them) fit to run; its hydra.* settings aside, which only Hydra checks (see diagnose_sweeper)."""
    return (command, _settings(job)) in _checked


def _settings(job: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides but hydra.*, in their order, each as Hydra's sweeper writes it (`lr=1e-3` as lr=0.001)."""
    parsed = OverridesParser.create().parse_overrides([o for o in job if not _for_hydra(o)])
    return tuple(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed)


def _for_hydra(arg: str) -> bool:
    """Whether an override (`hydra.launcher.workers=2`, `hydra/launcher=local`, `~hydra.x`) sets Hydra's own config,
    which the schema does not hold: Hydra's rule (Override.is_hydra_override) for a command-line string."""
    key = arg.lstrip("+~").split("=", 1)[0]
    return key.startswith(("hydra.", "hydra/"))


def _fits(base: DictConfig, values: list[str]) -> bool:
    """Whether `values` (key=value overrides), set into `base` (composed with the job's component options; Hydra
    composes at ~0.1 s a job, this takes ~1 ms), make a config that passes the schema's type and range checks."""
    cfg = base.copy()
    try:
        settings = [o for o in values if not _for_hydra(o) and not o.startswith("~")]
        for override in OverridesParser.create().parse_overrides(settings):
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
        OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, UserError, ValueError, TypeError):
        return False
    return True


def _check_names(command: str, overrides: list[Override]) -> None:
    """The commonest slips, an option that does not exist (`norm=batchnorm`) and a misspelt setting
    (`batchsize=4`), said with a did-you-mean: Hydra's own report spans a dozen lines of config search paths."""
    groups, settings = groups_and_options(command), settings_of(command)
    for override in overrides:
        key = override.key_or_group
        if override.is_hydra_override():
            continue
        if key.split(".")[0] in TARGET_GROUPS and key.split(".")[1:2] == ["args"]:  # a target's own arguments
            continue
        if override.is_add() or override.is_force_add():  # the schema holds every key: one added would be ignored
            raise UserError(f"{override.input_line}: diagnose has no setting '{key}' to add; every setting exists "
                            f"already (set one with key=value). `diagnose {command} --help` shows them all.")
        if override.is_delete():  # the schema needs every key: a run without `norm` or `model.depth` cannot be built
            what = f"pick another option ({key}=<option>)" if key in groups else f"set it ({key}=<value>)"
            raise UserError(f"{override.input_line}: diagnose cannot delete '{key}'; every setting and component group "
                            f"is part of the run. To change it, {what}. {_valid(command)}")
        if key in groups:
            for value in _values(override) or []:
                if value not in groups[key]:
                    raise UserError(f"{key}={value}: there is no {key} option '{value}'."
                                    f"{_did_you_mean(value, groups[key])} Valid options: {', '.join(groups[key])}.")
        elif key.split(".")[0] not in [*settings, *groups]:  # foo.bar: no group foo to hold it
            key = key.split(".")[0]
            hint = _did_you_mean(key, settings + [*groups])
            raise UserError(f"'{key}' is not a setting of `diagnose {command}`.{hint} {_valid(command)}")


def with_targets(args: list[str]) -> list[str]:
    """The command line with the user's own classes spelt as Hydra composes them: `model._target_=pkg.Net` picks the
    option `model=target`, and the class's arguments, `model.width=32`, become `++model.args.width=32` (the schema
    of a target cannot know them, so they are added). A group given both a `_target_` and another option is a
    mistake."""
    keys = {arg.lstrip("+~").split("=", 1)[0]: arg.split("=", 1)[1] for arg in args if _is_override(arg) and "=" in arg}
    targets = [group for group in TARGET_GROUPS if f"{group}._target_" in keys or keys.get(group) == TARGET]
    for group in targets:
        if keys.get(group, TARGET) != TARGET:
            raise UserError(f"{group}={keys[group]} and {group}._target_={keys.get(f'{group}._target_')}: pick one, "
                            f"the tool's own ({group}={keys[group]}) or your class ({group}._target_=...).")
    rewritten = [f"{group}={TARGET}" for group in targets if group not in keys]
    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        group, _, setting = key.partition(".")
        if _is_override(arg) and "=" in arg and not arg.startswith("~") and group in targets and setting \
                and setting.split(".")[0] not in DECLARED - {"args"}:
            arg = f"++{group}.args.{setting.removeprefix('args.')}={arg.split('=', 1)[1]}"
        rewritten.append(arg)
    return rewritten


def _check_targets(job: list[str]) -> None:
    """Each `<group>=target` of a job has a `<group>._target_` naming a class that imports and is an nn.Module: said
    before Hydra makes a run folder (imports the user's module, and torch with it, only where a target is given)."""
    paths = {key.removesuffix("._target_"): path.strip("'\"") for key, _, path in (o.partition("=") for o in job)
             if key.endswith("._target_")}
    for override in job:
        key, _, value = override.partition("=")
        if key in TARGET_GROUPS and value == TARGET:
            find_class(key, paths.get(key))  # without a path: the message says how to give one


def _check_launcher(overrides: list[Override]) -> None:
    """The local launcher's settings, checked here too so that a bad one gets the usual one-paragraph error, not
    Hydra's report of a failed instantiation."""
    for override in overrides:
        key = override.key_or_group
        setting = key.removeprefix("hydra.launcher.")
        if setting != key and setting in LAUNCHER_LEAST and not override.is_sweep_override():
            checks.whole(key, override.value(), minimum=LAUNCHER_LEAST[setting])


def _check_hydra_settings(command: str, overrides: list[Override]) -> None:
    """hydra.* and hydra/... overrides (a sweep's aside), checked by composing Hydra's own config with them: Hydra's
    report of a bad one is a dozen lines and exit 1."""
    theirs = [o.input_line for o in overrides if o.is_hydra_override() and not o.is_sweep_override()]
    if not theirs:
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            compose(command, overrides=theirs, return_hydra_config=True)
    except HydraException as err:
        said = str(err).split("Config search path:")[0].replace("\n\t", ", ").replace(":,", ":")
        lines = [line for line in said.splitlines() if line.strip() and not line.startswith("To append")]
        cause = f" ({str(err.__cause__).splitlines()[0]})" if err.__cause__ is not None else ""
        raise UserError(f"{' '.join(theirs)}: Hydra's own config cannot take this: {' '.join(lines).rstrip('.')}"
                        f"{cause}. `diagnose {command} --hydra-help` lists Hydra's groups and settings.") from None


def _values(override: Override) -> list[str] | None:
    """The values an override gives its key, as text; None for a sweep whose values Hydra finds (glob)."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    value = override.value()
    if isinstance(value, Glob):  # glob(...): only Hydra can expand it, against the config group
        return None
    try:
        return list(override.sweep_string_iterator())
    except Exception:  # noqa: BLE001 - interval(...): a sweeper's (optuna) to sample; range(0,2),1: no one's
        if not (isinstance(value, ChoiceSweep) and any(isinstance(v, Sweep) for v in value.list)):
            return None
        raise UserError(f"{override.input_line}: Hydra cannot expand this sweep (a range(...) or interval(...) inside "
                        f"a list of values is not a value). List the values (seed=0,1,2), or give one range "
                        f"(seed=range(0,3)).") from None


def _jobs_to_check(overrides: list[Override]) -> Any:
    """The override lists of every job of a sweep of up to CHECKED_JOBS jobs; of a larger one, lists that give every
    swept value once. A single run is one such list. Each list is in the command line's order, as Hydra's sweeper
    makes them (a later override of a key wins). A sweep that lists a value twice is refused: its two jobs would write
    one folder."""
    choices = []  # per override: its one value, or a sweep's values
    for override in overrides:
        if not override.is_sweep_override():
            choices.append([override.input_line])
            continue
        key, values = override.get_key_element(), _values(override)
        if values is None:  # glob(...): only Hydra can expand it, and composes those jobs itself
            continue
        if not values:
            raise UserError(f"{override.input_line} gives {key} no value: the sweep would run nothing. Give at least "
                            f"one (seed=range(0,3) runs seeds 0, 1 and 2).")
        seen: dict[object, str] = {}  # 0 and 00, 0.1 and 1e-1: one value as the config holds it
        first = twice = None
        for value in values:
            if _as_number(value) in seen:
                first, twice = seen[_as_number(value)], value
                break
            seen[_as_number(value)] = value
        if twice is not None:
            written = f"{twice} more than once" if first == twice else f"{first} and {twice}, one value"
            raise UserError(f"{key}={','.join(values)} lists {written}: those jobs would be the same run and write "
                            f"one folder. List each value once (a seed sweep: seed=0,1,2).")
        choices.append([f"{key}={value}" for value in values])
    jobs = math.prod(len(options) for options in choices)
    if jobs > MOST_JOBS:
        raise UserError(f"This sweep makes {jobs:,} jobs; one sweep runs at most {MOST_JOBS:,} (each is a run folder "
                        f"and a row of its summary). Split it into sweeps of fewer values.")
    if jobs <= CHECKED_JOBS:
        yield from (list(job) for job in itertools.product(*choices))
        return
    firsts = [options[0] for options in choices]
    yield firsts
    for i, options in enumerate(choices):
        for option in options[1:]:
            yield [option if j == i else first for j, first in enumerate(firsts)]


def _as_number(value: str) -> object:
    """A swept value as a number where it reads as one (as an int or float key holds it), else as written."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def composed(command: str, overrides: list[str]) -> Any:
    """The checked config of `diagnose <command> <overrides>` as the schema's objects; a UserError when the
    overrides do not fit the schema."""
    return _as_objects(_composed_config(command, overrides))


def _composed_config(command: str, overrides: list[str]) -> DictConfig:
    """`composed`, before it becomes the schema's objects; a UserError where Hydra cannot compose it."""
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(command, overrides=[o for o in overrides if not _for_hydra(o)])
    except HydraException as err:
        raise UserError(_one_line(err, command)) from None
    except OmegaConfBaseException as err:
        raise UserError(_said(err)) from None


def _as_objects(cfg: DictConfig) -> Any:
    """The schema's objects, their range checks run; a UserError where a value cannot be resolved."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:  # resolving the values: an interpolation that cannot be
        raise UserError(_said(err)) from None


def _said(err: OmegaConfBaseException) -> str:
    first = str(err).splitlines()[0]
    return f"{err.full_key}: {first}" if getattr(err, "full_key", None) else first


def _one_line(err: HydraException, command: str) -> str:
    cause = err.__cause__
    if isinstance(cause, ConfigAttributeError):
        group, _, key = cause.full_key.partition(".")
        if not key:
            return f"'{group}' is not a setting of `diagnose {command}`."
        known = [f.name for f in fields(cause.object_type) if f.name != "name"] if cause.object_type else []
        option = f"{group}={cause.parent_node.get('name')}" if group in GROUPS else group
        return (f"{cause.full_key} is not a setting of {option}.{_did_you_mean(cause.key, known)} "
                f"Its settings: {', '.join(known) or 'none'}.")
    if isinstance(cause, ValidationError):
        message = str(cause).splitlines()[0]
        conversion = re.match(r"Value '(.*)' of type '.*' could not be converted to (\w+)", message)
        if conversion and conversion.group(2) in TYPE_WORDS:
            return f"{cause.full_key} must be {TYPE_WORDS[conversion.group(2)]}, got '{conversion.group(1)}'."
        if "is not a valid bool" in message:
            return f"{cause.full_key} must be true or false, got '{cause.value}'."
        if "is not Optional" in message:
            return f"{cause.full_key} cannot be null."
        if "is not a ListConfig" in message:
            return f"{cause.full_key} must be a list, e.g. {cause.full_key}=[1,2]."
        return f"{cause.full_key}: {message}"
    return str(err).splitlines()[0]


def _did_you_mean(given: str, known: list[str]) -> str:
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(str(given).lower(), list(by_lower), n=1)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def name_jobs_by_swept_keys(args: list[str]) -> list[str]:
    """In a sweep, name each job's folder by the keys that vary only (`batch=4,norm=gn`), not by every
    override on the command line: the fixed ones are the same for all jobs and would drown them."""
    if "-m" not in args and "--multirun" not in args:
        return args
    overrides = _parsed(args)
    if overrides is None:
        return args
    fixed = [o.key_or_group for o in overrides if not o.is_sweep_override() and not o.is_hydra_override()]
    if not fixed or len(fixed) == len(overrides):
        return args
    exclude = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"
    last = max(i for i, a in enumerate(args) if _is_override(a))
    return [*args[:last + 1], exclude, *args[last + 1:]]  # beside the other overrides: argparse wants them together
