"""Look up a component by its short name."""

from collections.abc import Mapping
from typing import TypeVar

from diagnose.errors import UserError

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str | T, kind: str) -> T:
    """Return `table[name]`; a non-string is returned as is, so callers may pass a class directly."""
    if not isinstance(name, str):
        return name
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise UserError(f"Unknown {kind} '{name}'. Valid options: {valid}.") from None
