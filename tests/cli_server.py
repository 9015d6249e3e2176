"""`python -m diagnose`, started once: the tests' command-line runs without paying for the imports each time.

A `diagnose` process spends ~3.5 s of a small test run importing torch (and torch._dynamo, which the first optimizer
pulls in), TensorBoard, Hydra and its plugins, before it reads its command line. This server does those imports once,
runs nothing, and then forks a child per request: the child is the process `python -m diagnose ARGS` would be, in
the test's folder, with the test's environment and its own stdin/stdout/stderr, and it exits the way Python exits
(non-daemon threads joined, atexit run, the exit code of SystemExit, SIGINT's death on an uncaught Ctrl-C).
tests/conftest.py's `run_cli` talks to it; what cannot differ from a fresh process is checked there (the variables
that torch and its thread pools read at import).

Protocol, one JSON line each way on stdin/stdout: {"args", "cwd", "env", "stdout", "stderr"} (the last two are files
the child writes); the server answers {"pid"} when the child starts and {"returncode"} when it ends (minus the
signal's number when a signal ended it, as subprocess says).
"""

import atexit
import contextlib
import json
import os
import pkgutil
import signal
import sys
import threading
import traceback


def preload() -> None:
    """Every module a run may import, imported and not run: what a fresh process would import on the way."""
    import hydra._internal.utils  # noqa: F401
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


def child(request: dict, base_path: list[str]) -> None:
    """Become `python -m diagnose ARGS` and exit as it would; never returns."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    # the streams a fresh interpreter makes on non-terminals: stdout block-buffered, stderr line-buffered
    sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115 (the process's own, for its whole life)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)  # noqa: SIM115
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


if __name__ == "__main__":
    preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    serve()
