"""The run the overhead benchmarks time (overhead.py, watch_overhead.py, profile_steps.py, step_costs.py): the default
CNN on a 10,000-example subset of Fashion-MNIST with 1,000 held out, or as many synthetic images where Debian's
dataset-fashion-mnist is not installed. One definition, so that their numbers describe the same run."""

import argparse
from pathlib import Path

FASHION = Path("/usr/share/datasets/fashion-mnist")


def add_arguments(parser: argparse.ArgumentParser, steps_help: str | None = None) -> None:
    """--data, --steps and --batch, with the run's defaults."""
    parser.add_argument("--data", default="fashion_mnist" if FASHION.is_dir() else "synthetic")
    parser.add_argument("--steps", type=int, default=300, help=steps_help)
    parser.add_argument("--batch", type=int, default=128)


def data_overrides(data: str) -> list[str]:
    """The data group's overrides of the run: its dataset, the subset trained on and the examples held out."""
    size = ["data.train_count=11000"] if data == "synthetic" else ["data.subset=10000"]
    return [f"data={data}", "data.val_size=1000", *size]
