"""A module imported at its first use: the component registries name torch in their makers, while the command line
reads the registries' options (to check a command line, to print `--help`) long before anything is built, and torch
takes a second to import.

(The field's `lazy_loader` puts a half-loaded module into `sys.modules` for every importer; this stays local to the
modules that ask for it.)"""

import importlib
from types import ModuleType
from typing import Any


class Later:
    """Stands for the module `name` and imports it when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # copy, pickle and friends probing for hooks: not the module's to answer
            raise AttributeError(attribute)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __reduce__(self) -> tuple:  # a copy, or a pickle, is a proxy again, not the module it may have loaded
        return later, (self._name,)

    def __repr__(self) -> str:
        return f"<{self._name}, imported at first use>"


def later(name: str) -> Any:
    """`nn = later("torch.nn")`: `nn.ReLU()` inside a function imports torch then, not when this module is imported."""
    return Later(name)
