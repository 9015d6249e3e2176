"""Components by short name: one entry per option, carrying everything the rest of the package needs to know."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from omegaconf import MISSING

from diagnose.errors import UserError

T = TypeVar("T")


@dataclass
class Options:
    """A component's config: `name` picks its registry entry. An option with settings of its own subclasses this,
    one typed field per setting; the field's default is *the* default (Hydra checks the yaml files against it),
    and `__post_init__` checks the values' ranges."""

    name: str = MISSING


@dataclass(frozen=True, kw_only=True)
class Component:
    """A registry entry. `make` is called with the option's settings as keywords; None is the option that adds
    nothing (norm=none, init=default, clip=none), the one way "no component" is spelt."""

    make: Callable[..., Any] | None
    options: type[Options] = Options


def lookup(table: Mapping[str, T], name: str | T, kind: str) -> T:
    """Return `table[name]`; a non-string is returned as is, so callers may pass an entry directly."""
    if not isinstance(name, str):
        return name
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise UserError(f"Unknown {kind} '{name}'. Valid options: {valid}.") from None


def settings(options: Options) -> dict[str, Any]:
    """An option's own settings, as the keyword arguments of its entry's callables."""
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name != "name"}


def make(entry: Component, options: Options, *args: Any) -> Any:
    """Build what `entry` makes with the settings of `options`; None for the option that adds nothing."""
    return None if entry.make is None else entry.make(*args, **settings(options))
