"""Check the numbers in a composed config before anything is built, with messages that name the key."""

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diagnose.errors import UserError

CHOICES = {"precision": ("fp32", "bf16")}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def positive_int(key: str, value: Any, minimum: int = 1) -> None:
    if not _is_int(value) or value < minimum:
        raise UserError(f"{key} must be a whole number >= {minimum}, got {value!r}.")


def optional_positive_int(key: str, value: Any) -> None:
    if value is not None:
        positive_int(key, value)


def positive_number(key: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise UserError(f"{key} must be a number > 0, got {value!r}.")


def fraction(key: str, value: Any) -> None:
    if not _is_number(value) or not 0 <= value < 1:
        raise UserError(f"{key} must be a number in [0, 1), got {value!r}.")


def choice(key: str, value: Any) -> None:
    if value not in CHOICES[key]:
        raise UserError(f"{key} must be one of {', '.join(CHOICES[key])}; got {value!r}.")


def check_config(cfg: DictConfig) -> None:
    positive_int("batch", cfg.batch)
    positive_number("lr", cfg.lr)
    positive_int("epochs", cfg.epochs)
    optional_positive_int("steps", cfg.steps)
    positive_int("seed", cfg.seed, minimum=0)
    positive_int("log_every", cfg.log_every)
    choice("precision", cfg.precision)
    positive_int("optim.base_batch", cfg.optim.base_batch)
    if cfg.clip.name != "none":
        positive_number("clip.max", cfg.clip.max)
    positive_int("data.val_size", cfg.data.val_size, minimum=0)
    optional_positive_int("data.subset", cfg.data.subset)
    fraction("model.dropout", cfg.model.dropout)
    for key in ("every", "hist_every", "probe_every", "dead_since"):
        positive_int(f"diag.{key}", cfg.diag[key], minimum=0)
    positive_int("diag.probe_size", cfg.diag.probe_size)
    positive_int("diag.landscape_every", cfg.diag.landscape_every)
    if cfg.model.name == "cnn":
        widths = cfg.model.widths
        if not OmegaConf.is_list(widths) or not widths:
            raise UserError(f"model.widths must be a list of channel counts, e.g. [32,64,128]; got {widths!r}.")
        for width in widths:
            positive_int("every entry of model.widths", width)
        positive_int("model.blocks", cfg.model.blocks)
    elif cfg.model.name == "mlp":
        positive_int("model.depth", cfg.model.depth)
        positive_int("model.width", cfg.model.width)
