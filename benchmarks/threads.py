"""The thread policy against both fixed choices: training steps/s with 1 thread, with every core, and with
`threads=auto` (its pick timed at start-up, re-checked while it trains), side by side, interleaved round by round.

    python benchmarks/threads.py                      # the load changes during the run: the default CNN, batch 128
    python benchmarks/threads.py --rounds 5 --steps 300
    python benchmarks/threads.py --steady             # a steady machine: small and large models

The two load scenarios: another process busy on one core (a single-threaded torch loop of matrix products, started
and stopped by this benchmark) for the first third of the training steps and then gone ("busy, then quiet"), or
arriving after the first third and staying ("quiet, then busy"). The load follows the run's steps (read from its
progress lines), so every choice trains the same steps under load. Each measurement is a fresh process (torch's
thread pool is set per process); medians over the rounds, and the range. Default data (the shipped sample), diag=off.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {  # name -> overrides, for --steady
    "MLP, batch 2": ["model=mlp", "batch=2"],
    "MLP, batch 8": ["model=mlp", "batch=8"],
    "MLP, batch 128": ["model=mlp", "batch=128"],
    "CNN, batch 4": ["model=cnn", "batch=4"],
    "CNN, batch 128": ["model=cnn", "batch=128"],
}
SCENARIOS = ("busy, then quiet", "quiet, then busy")
LOAD = "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\nwhile True: a @ a"
STEP_LINE = re.compile(r"step (\d+)/\d+ ")


def worker(overrides: list[str], threads: str, steps: int, synthetic: bool) -> None:
    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.config import to_dict
    from diagnose.training.loop import train

    data = ["data=synthetic", "data.train_count=20000"] if synthetic else []
    cfg = composed("train", [*overrides, *data, f"threads={threads}", f"steps={steps}", "diag=off", "device=cpu"])
    run = build_run(cfg)
    with tempfile.TemporaryDirectory() as out:
        metrics = train(run, Path(out), to_dict(cfg))
    print(json.dumps({"steps_per_s": metrics.images_per_s / cfg.batch, "threads": metrics.threads}))


def measure(args: list[str], load_from: int | None = None, load_until: int | None = None) -> dict:
    """Run a worker; with `load_from`/`load_until`, a busy process runs while the worker's step is in that range
    (None: from its start, or to its end)."""
    cmd = [sys.executable, __file__, *args]
    load = None
    try:
        if load_from is None and load_until is not None:
            load = subprocess.Popen([sys.executable, "-c", LOAD])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        for line in proc.stderr:  # the loop's progress: one plain line per log window when piped
            match = STEP_LINE.search(line)
            step = int(match.group(1)) if match else 0
            if load is None and load_from is not None and step >= load_from:
                load = subprocess.Popen([sys.executable, "-c", LOAD])
            if load is not None and load_until is not None and step >= load_until:
                load.kill()
                load.wait()
                load, load_until = None, None
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise RuntimeError(f"{cmd} failed")
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return json.loads(out.strip().splitlines()[-1])


def picks(run: dict) -> str:
    """threads=auto's counts over a run: '1', or '1>2@140' (2 from step 140)."""
    first, *changes = run["threads"]
    return str(first[1]) + "".join(f">{threads}@{step}" for step, threads in changes)


def row(name: str, runs: dict[str, list[dict]], choices: tuple[str, ...]) -> str:
    cells = []
    for choice in choices:
        speeds = [r["steps_per_s"] for r in runs[choice]]
        cells.append(f"{statistics.median(speeds):.2f} ({min(speeds):.2f}-{max(speeds):.2f})")
    return f"| {name} | " + " | ".join(cells) + f" | {', '.join(picks(r) for r in runs['auto'])} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steady", action="store_true", help="no load of its own; the small and large models")
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--synthetic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(CASES[args.worker], args.threads, args.steps, args.synthetic)

    cores = str(os.cpu_count() or 1)
    choices = ("1", cores, "auto")
    print(f"{args.steps} steps, {args.rounds} rounds, {cores} cores; training steps/s, median (range) over the rounds")
    print(f"| case | 1 thread | {cores} threads | auto | auto's threads, each round |")
    print("|---|---|---|---|---|")
    third = args.steps // 3
    cases = ([(case, case, {}) for case in CASES] if args.steady else
             [(scenario, "CNN, batch 128", {"load_until": third} if scenario == SCENARIOS[0] else {"load_from": third})
              for scenario in SCENARIOS])
    for name, case, load in cases:
        runs: dict[str, list[dict]] = {choice: [] for choice in choices}
        for round_ in range(args.rounds):
            for choice in choices[round_ % 3:] + choices[:round_ % 3]:  # rotated: no choice always runs first
                worker_args = ["--worker", case, "--threads", choice, "--steps", str(args.steps)]
                runs[choice].append(measure(worker_args + (["--synthetic"] if args.steady else []), **load))
        print(row(name, runs, choices), flush=True)


if __name__ == "__main__":
    main()
