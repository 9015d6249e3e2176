"""diagnose: swap a component of a network, train it, and see inside it."""

__version__ = "0.1.0"
