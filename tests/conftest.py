import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose.cli import config_dir
from diagnose.cli.overrides import composed

# Tests run side by side (pytest-xdist, one worker a core): each worker and each `diagnose` it starts gets one
# intra-op thread, as two torch processes spinning up every core's worth of threads slow each other several-fold
# (and tiny models are faster on one thread anyway).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

CONF = config_dir()
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

# A tiny, fast run: synthetic 8x8 images, a few steps, on the CPU.
TINY_DATA = ["data=synthetic", "data.size=8", "data.train_count=256", "data.test_count=64", "data.val_size=64",
             "batch=16", "steps=4", "log_every=2", "device=cpu"]
TINY = [*TINY_DATA, "model.widths=[8,16]"]


def needs_fashion() -> None:
    """Skip a real-data test where Debian's dataset-fashion-mnist is absent; fail in CI, which installs it, so
    that a broken install cannot pass by skipping."""
    if not FASHION.is_dir():
        message = f"{FASHION} is missing: install Debian's dataset-fashion-mnist to run this"
        pytest.fail(message) if os.environ.get("DIAGNOSE_REAL_DATA") == "required" else pytest.skip(message)


def compose_config(overrides: list[str], config_name: str = "train") -> Any:
    """The checked config `diagnose <config_name> <overrides>` would run (the schema's objects), composed through
    Hydra's own API as the CLI does."""
    return composed(config_name, overrides)


def compose_raw(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The composed DictConfig with its `hydra` node, as Hydra hands it to a job."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def options_of(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def cfg_factory() -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(TINY + list(overrides))


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `diagnose ARGS` as a user would, in `cwd`, and capture everything it prints."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "diagnose", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: workers that start on them finish together with the others, instead of one worker
    starting a 30 s test when the rest is done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


DEPTH_LABEL = re.compile(r"^([^/]+)/\d+ ")


def plain(tag: str) -> str:
    """A TensorBoard tag with its layer's depth label taken off: 'act_std/03 features.2.act' -> 'act_std/features.2.act'
    (diagnostics/layers.py: depth_labels)."""
    return DEPTH_LABEL.sub(r"\1/", tag)


def events_of(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0}).Reload()


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run, by plain tag: [(step, value)]."""
    events = events_of(run_dir)
    return {plain(tag): [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tags(run_dir: Path) -> dict[str, set[str]]:
    """A run's tags by kind (scalars, histograms, images, tensors), plain."""
    return {kind: {plain(tag) for tag in names} for kind, names in events_of(run_dir).Tags().items()
            if isinstance(names, list)}
