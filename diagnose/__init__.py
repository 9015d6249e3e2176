"""diagnose: swap a component of a network, train it, and see inside it."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`diagnose.watch` (diagnose/watched.py), imported at its first use: `import diagnose` stays cheap (no torch)."""
    if name == "watch":
        from diagnose.watched import watch

        return watch
    raise AttributeError(f"module 'diagnose' has no attribute '{name}'")
