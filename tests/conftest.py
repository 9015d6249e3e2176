import atexit
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
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
    """Run `diagnose ARGS` as a user would, in `cwd`, and capture everything it prints: a process of its own, forked
    from a `python -m diagnose` that has done its imports (tests/cli_server.py), or started afresh where the
    environment differs in what torch reads at import (or DIAGNOSE_TEST_FRESH=1 asks for it)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    command = [sys.executable, "-m", "diagnose", *args]
    if os.environ.get("DIAGNOSE_TEST_FRESH") == "1" or _read_at_import(full_env) != _read_at_import(os.environ):
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    return _CLI_SERVER.run(command, cwd, timeout, full_env)


def _read_at_import(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a process reads once, as it starts: torch's and the thread pools'; the server has its own."""
    prefixes = ("OMP_", "MKL_", "KMP_", "GOMP_", "TORCH", "CUDA", "LD_", "PYTHON", "MALLOC")
    return {key: value for key, value in env.items() if key.startswith(prefixes) and key != "PYTHONPATH"}


class _CliServer:
    """One tests/cli_server.py per test process, started at its first run."""

    def __init__(self):
        self.server: subprocess.Popen | None = None

    def _started(self) -> subprocess.Popen:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_server.py"))],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            json.loads(self.server.stdout.readline())  # {"ready"}: its imports done
        return self.server

    def run(self, command: list[str], cwd: Path, timeout: float, env: dict) -> subprocess.CompletedProcess:
        server = self._started()
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"args": command[3:], "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            pid = json.loads(server.stdout.readline())["pid"]
            overdue = threading.Event()
            timer = threading.Timer(timeout, lambda: (overdue.set(), os.kill(pid, signal.SIGKILL)))
            timer.start()
            try:
                returncode = json.loads(server.stdout.readline())["returncode"]
            finally:
                timer.cancel()
            said = [io.TextIOWrapper(io.BytesIO(path.read_bytes())).read() for path in (out, err)]  # as text=True
        if overdue.is_set():
            raise subprocess.TimeoutExpired(command, timeout, *said)
        return subprocess.CompletedProcess(command, returncode, *said)

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=30)


_CLI_SERVER = _CliServer()
atexit.register(_CLI_SERVER.close)


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
