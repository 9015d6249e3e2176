"""The user's own code, named on the command line (`model._target_=mynets.Net`, `data._target_=mine.load`): found as
`python -m` finds a module (the current directory first, then PYTHONPATH), and what goes wrong in it said in one line
that names what was tried and the line of their code that failed."""

import importlib
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from diagnose.errors import UserError


def locate(key: str, path: str) -> Any:
    """The object `path` (package.module.attribute, or an attribute of an attribute) names; `key` is the setting that
    named it (`model._target_`), which every message starts with."""
    parts = path.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise UserError(f"{key}={path}: name it as module.name (e.g. {key}=mine.Net for the class Net of mine.py, in "
                        f"the folder diagnose runs from).")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:  # an installed console script does not put it there; `-m` does
        sys.path.insert(0, here)
    tried = []
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and (module_name + ".").startswith(err.name + "."):
                tried.append(module_name)  # no such module: a shorter name may be one, with the rest its attributes
                continue
            raise UserError(f"{key}={path}: importing {module_name} raised {said(err)}.") from None
        except Exception as err:  # noqa: BLE001 - the user's module failed while it was imported
            raise UserError(f"{key}={path}: importing {module_name} raised {said(err)}.") from None
        for depth, attribute in enumerate(parts[cut:], start=cut):
            if not hasattr(found, attribute):
                where = getattr(found, "__file__", None) or "found"
                raise UserError(f"{key}={path}: {'.'.join(parts[:depth])} ({where}) has no {attribute}."
                                f"{_defined(found)}")
            found = getattr(found, attribute)
        return found
    raise UserError(f"{key}={path}: no module {' or '.join(tried)} was found in {here} (where diagnose runs) or on "
                    f"PYTHONPATH. Run diagnose from the folder that holds {parts[0]}.py (or the package {parts[0]}/), "
                    f"or add that folder to PYTHONPATH.")


def _defined(found: Any) -> str:
    """What a module of the user's defines that could be named instead: its own classes and functions."""
    if not inspect.ismodule(found):
        return ""
    names = sorted(name for name, value in vars(found).items() if not name.startswith("_")
                   and (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == found.__name__)
    return f" It defines: {', '.join(names)}." if names else ""


def said(err: BaseException) -> str:
    """The error in one line, with the line of the user's code that raised it (not diagnose's, nor importlib's)."""
    machinery = (str(Path(importlib.__file__).parent), "<")  # importlib's own frames, real and frozen
    frames = [f for f in traceback.extract_tb(err.__traceback__)[1:] if not f.filename.startswith(machinery)]
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {first_line(err)}{where}"


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]
