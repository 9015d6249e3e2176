"""`python -m diagnose`, started once: the tests' command-line runs without paying for the imports each time.

A `diagnose` process spends ~3.5 s of a small test run importing torch (and torch._dynamo, which the first optimizer
pulls in), TensorBoard, Hydra and its plugins, before it reads its command line, and ~1.5 s more on matplotlib and its
fonts for the first depth figure. This server does those imports once, draws one figure, runs nothing else, and forks
a child per request: the child is the process `python -m diagnose ARGS` would be, in the test's folder, with the
test's environment and its own stdin/stdout/stderr (files, pipes or a terminal), and it exits the way Python exits
(non-daemon threads joined, atexit run, the exit code of SystemExit, SIGINT's death on an uncaught Ctrl-C).

Both ends are here: `serve` runs in the server (this file as a script), `CliServer` in the test process
(tests/conftest.py: `run_cli`, `start_cli`), which also decides what must not differ from a fresh process (the
variables read as a process starts: READ_AT_START) and starts a fresh one there.

Protocol, one JSON line each way on the server's stdin/stdout: {"args", "cwd", "env", "stdin", "stdout", "stderr"
(paths, or None for /dev/null), "session" (a session of its own, as start_new_session), "sigint" (Python's Ctrl-C
handler, as a process started with SIGINT not ignored), "ready" (a file the child makes once its streams are open)};
the server answers {"pid"} when the child starts and {"returncode"} when it ends (minus the signal's number when a
signal ended it, as subprocess says). One child at a time.
"""

import atexit
import contextlib
import io
import json
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

# Server side


def preload() -> None:
    """Every module a run may import, imported and not run: what a fresh process would import on the way; and one
    figure drawn, as a process's first loads its fonts (~0.4 s): caches only, nothing a run reads."""
    import hydra._internal.utils  # noqa: F401
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    import matplotlib.ticker  # noqa: F401  (the depth figure's, which diagnose imports on first use)
    import torch._decomp.decompositions_for_jvp  # noqa: F401  (the probe's torch.func.jacfwd scripts them: ~1 s)
    import torch._dynamo  # noqa: F401  (torch.optim's first optimizer imports it: ~1 s)
    import torch.utils.tensorboard  # noqa: F401

    import diagnose
    import hydra_plugins

    for package in (diagnose, hydra_plugins):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name.endswith("__main__"):  # that one runs the command
                continue
            # an optional plugin whose dependency is absent: a fresh process would not load it either
            with contextlib.suppress(Exception):
                __import__(module.name)
    figure = matplotlib.figure.Figure()
    matplotlib.backends.backend_agg.FigureCanvasAgg(figure)
    figure.subplots().set_yscale("log")
    figure.suptitle("fonts")
    figure.canvas.print_png(io.BytesIO())


def child(request: dict, base_path: list[str]) -> None:
    """Become `python -m diagnose ARGS` and exit as it would; never returns."""
    if request["session"]:
        os.setsid()
    if request["sigint"]:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd, path, flags in ((0, request["stdin"], os.O_RDWR), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        os.dup2(os.open(path or os.devnull, flags, 0o644), fd)
    Path(request["ready"]).touch()
    # the streams a fresh interpreter makes: on a terminal line-buffered; elsewhere stdout block-buffered, stderr
    # line-buffered
    sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115 (the process's own, for its whole life)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # `python -m` puts the current folder first, then PYTHONPATH: where a user's own network is found
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [os.getcwd(), *extra, *base_path]

    import rich

    from diagnose import console

    rich._console = None
    console.console.__init__(stderr=True)  # rich read COLUMNS and the terminal when the server imported it

    import runpy

    sys.argv = ["diagnose", *request["args"]]
    code = 0
    try:
        runpy.run_module("diagnose", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        if exit.code is None:
            code = 0
        elif isinstance(exit.code, int):
            code = exit.code
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python dies of the SIGINT it did not handle
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    _finish()
    os._exit(code & 0xFF)


def _finish() -> None:
    """What the interpreter does on its way out: wait for non-daemon threads, run atexit, flush."""
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def serve() -> None:
    pythonpath = set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    base_path = [entry for entry in sys.path[1:] if entry not in pythonpath]  # without this script's folder
    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                replies.close()
                child(request, base_path)
            finally:  # the child never goes back to serving, whatever went wrong in it
                traceback.print_exc()
                os._exit(70)
        print(json.dumps({"pid": pid}), file=replies, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=replies, flush=True)


# Test side


# read once, as a process starts: by the interpreter, the loader, the allocator and the thread pools that torch's
# import sets up (torch's own TORCH* variables are read when used, and torch sets some itself, e.g. inductor's cache)
READ_AT_START = ("PYTHON", "LD_", "MALLOC", "OMP_", "GOMP_", "KMP_", "MKL_")


def read_at_start(env: dict[str, str] | os._Environ) -> dict[str, str]:
    """The variables of `env` a process reads once, as it starts (PYTHONPATH aside: a child puts it on sys.path
    itself)."""
    return {key: value for key, value in env.items() if key.startswith(READ_AT_START) and key != "PYTHONPATH"}


class CliServer:
    """One server per test process, started at its first use; `busy` while a started command runs."""

    def __init__(self):
        self.server: subprocess.Popen | None = None
        self.busy = False
        # the environment the server starts with, whenever that is: the test process's as it began, not as a test
        # may have patched it by then
        self.environment = dict(os.environ)

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a child of the server can be the process started with `env`: the server is free, and `env` says
        what the server's environment says for the variables read at start."""
        return not self.busy and read_at_start(env) == read_at_start(self.environment)

    def _started(self) -> subprocess.Popen:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True, env=self.environment)
            self._reply("ready")  # its imports done
        return self.server

    def _fork(self, args: list[str], cwd: Path, env: dict, folder: str, streams: tuple, session: bool = False,
              sigint: bool = False) -> int:
        """The child's pid, once its streams are open."""
        server, ready = self._started(), Path(folder, "ready")
        request = {"args": args, "cwd": str(cwd), "env": env, "stdin": streams[0], "stdout": streams[1],
                   "stderr": streams[2], "session": session, "sigint": sigint, "ready": str(ready)}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        pid = self._reply("pid")
        while not ready.exists():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:  # it ended before its streams were open: its returncode says how
                break
            time.sleep(0.001)
        return pid

    def _returncode(self) -> int:
        return self._reply("returncode")

    def _reply(self, key: str) -> int:
        """The server's next answer; where it died instead, an error saying so (its traceback is on stderr)."""
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/cli_server.py ended (exit code {self.server.wait()}) where it was to send its "
                               f"{key}: see its traceback above, or run the test with DIAGNOSE_TEST_FRESH=1")
        return json.loads(line)[key]

    def run(self, command: list[str], cwd: Path, timeout: float, env: dict) -> subprocess.CompletedProcess:
        """As subprocess.run(command, capture_output=True, text=True)."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            pid = self._fork(command[3:], cwd, env, folder, (None, str(out), str(err)))
            overdue = threading.Event()
            timer = threading.Timer(timeout, lambda: (overdue.set(), os.kill(pid, signal.SIGKILL)))
            timer.start()
            try:
                returncode = self._returncode()
            finally:
                timer.cancel()
            said = [io.TextIOWrapper(io.BytesIO(path.read_bytes())).read() for path in (out, err)]  # as text=True
        if overdue.is_set():
            raise subprocess.TimeoutExpired(command, timeout, *said)
        return subprocess.CompletedProcess(command, returncode, *said)

    def start(self, command: list[str], cwd: Path, env: dict, stdout: bool, tty: int | None, session: bool,
              sigint: bool) -> "Started":
        """As subprocess.Popen(command, stdout=PIPE or DEVNULL, stderr=PIPE, text=True), or with a terminal's
        follower for all three streams."""
        folder = tempfile.mkdtemp()
        if tty is not None:
            streams, pipes = (os.ttyname(tty),) * 3, {}
        else:
            paths = {"stdout": Path(folder, "stdout") if stdout else None, "stderr": Path(folder, "stderr")}
            pipes = {name: _pipe(path) for name, path in paths.items() if path is not None}
            streams = (None, *(str(path) if path else None for path in paths.values()))
        self.busy = True
        pid = self._fork(command[3:], cwd, env, folder, streams, session, sigint)
        return Started(self, command, pid, pipes, folder)


    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=30)


def _pipe(path: Path) -> tuple[int, int]:
    """A named pipe's read end, and a write end held until the child has ended: its reader then sees EOF only once
    the child and everything it started have closed it, as with subprocess's pipes."""
    os.mkfifo(path)
    read = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    write = os.open(path, os.O_WRONLY)
    os.set_blocking(read, True)
    return read, write


class Started:
    """A `diagnose` forked by the server, as much of subprocess.Popen as the tests use."""

    def __init__(self, server: CliServer, command: list[str], pid: int, pipes: dict[str, tuple[int, int]],
                 folder: str):
        self.args, self.pid, self.returncode = command, pid, None
        self.stdout, self.stderr = (os.fdopen(pipes[name][0], "r") if name in pipes else None
                                    for name in ("stdout", "stderr"))
        self._ended = threading.Event()
        held = [write for _, write in pipes.values()]
        threading.Thread(target=self._await, args=(server, held, folder), daemon=True).start()

    def _await(self, server: CliServer, held: list[int], folder: str) -> None:
        self.returncode = server._returncode()
        for fd in held:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        server.busy = False
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        said: dict[str, str] = {}
        readers = [threading.Thread(target=lambda name=name, stream=stream: said.__setitem__(name, stream.read()),
                                    daemon=True)
                   for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)) if stream is not None]
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        return said.get("stdout"), said.get("stderr")

    def send_signal(self, sig: int) -> None:
        if not self._ended.is_set():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    serve()
