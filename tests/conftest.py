import atexit
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_server import CliServer
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
    from a `python -m diagnose` that has done its imports (tests/cli_server.py), or started afresh where `_fresh`
    says so."""
    command, full_env = _invocation(args, env)
    if _fresh(full_env):
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    return _CLI_SERVER.run(command, cwd, timeout, full_env)


def start_cli(args: list[str], cwd: Path, env: dict | None = None, stdout: bool = True, tty: int | None = None,
              session: bool = False, sigint: bool = False) -> Any:
    """Start `diagnose ARGS` as subprocess.Popen(..., stdout=PIPE (DEVNULL: stdout=False), stderr=PIPE, text=True)
    would, or with the follower `tty` of a pseudo-terminal as its three streams; `session`: a session of its own
    (start_new_session); `sigint`: Python's Ctrl-C handler even where the tests run with SIGINT ignored (nohup).
    Forked from the server as run_cli's runs are; what comes back has Popen's pid, stdout, stderr, poll, wait,
    communicate, send_signal and kill."""
    command, full_env = _invocation(args, env)
    if not _fresh(full_env):
        return _CLI_SERVER.start(command, cwd, full_env, stdout, tty, session, sigint)
    streams = {"stdin": tty, "stdout": tty, "stderr": tty} if tty is not None else \
        {"stdout": subprocess.PIPE if stdout else subprocess.DEVNULL, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, cwd=cwd, env=full_env, text=tty is None, start_new_session=session,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sigint else None,
                            **streams)


def _invocation(args: list[str], env: dict | None) -> tuple[list[str], dict[str, str]]:
    """`python -m diagnose ARGS`, and its environment: this process's, 200 columns wide, `env` on top."""
    return [sys.executable, "-m", "diagnose", *args], {**os.environ, "COLUMNS": "200", **(env or {})}


def _fresh(env: dict[str, str]) -> bool:
    """Whether `diagnose` must start afresh: the server has another command running or started with another value of
    a variable read at start (the interpreter's, the thread pools'), or DIAGNOSE_TEST_FRESH=1 asks for it."""
    return os.environ.get("DIAGNOSE_TEST_FRESH") == "1" or not _CLI_SERVER.fits(env)


_CLI_SERVER = CliServer()
atexit.register(_CLI_SERVER.close)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """A test that runs a command in-process (`main([...])`) has Hydra configure logging: the handlers it adds (a run's
    train.log, the terminal's stream) would go on receiving the next tests' lines, twice, or into a closed file.
    Each test gets the loggers as the one before it found them."""
    loggers = [logging.getLogger(), logging.getLogger("diagnose")]
    before = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in before:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


SLOW_SECONDS = 5  # what a test marked slow without `seconds=` is taken to last


def expected_seconds(item: pytest.Item) -> float:
    """How long a test is expected to take: `@pytest.mark.slow(seconds=N)`, or SLOW_SECONDS for a plain `slow`, or 0."""
    marker = item.get_closest_marker("slow")
    return 0 if marker is None else marker.kwargs.get("seconds", SLOW_SECONDS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first, so that the workers end together on short ones: with the slow tests in file order, a
    20 s test ran last, alone, and kept one core idle for 15 s of a 195 s run."""
    items.sort(key=lambda item: -expected_seconds(item))


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
