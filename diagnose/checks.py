"""Range checks of config values, called by the schema's `__post_init__`s: messages that name the key and say
what it takes. Types are checked before these run, by OmegaConf against the schema."""

import math
from collections.abc import Iterable
from typing import Any

from diagnose.errors import UserError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def whole(key: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        limits = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise UserError(f"{key} must be a whole number {limits}, got {value!r}.")


def optional_whole(key: str, value: Any, minimum: int = 1) -> None:
    if value is not None:
        whole(key, value, minimum)


def positive(key: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise UserError(f"{key} must be a number > 0, got {value!r}.")


def at_least(key: str, value: Any, minimum: float) -> None:
    if not _is_number(value) or value < minimum:
        raise UserError(f"{key} must be a number >= {minimum:g}, got {value!r}.")


def between(key: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    """low <= value <= high, or < high with `high_open`."""
    above = value >= high if high_open else value > high
    if not _is_number(value) or value < low or above:
        raise UserError(f"{key} must be a number in [{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}.")


def one_of(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise UserError(f"{key} must be one of {', '.join(choices)}; got {value!r}.")
