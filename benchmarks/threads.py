"""The thread policy against both fixed choices: training steps/s with 1 thread, with every core, and with what
`threads=auto` picks (timed on the run's own step while it is built), side by side, for small and large models.

    python benchmarks/threads.py
    python benchmarks/threads.py --steps 300 --rounds 3

Each measurement is a fresh process (torch's thread pool is set once per process), the three choices
interleaved round by round; medians are shown. Synthetic 28x28 data, diag=off.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {  # name -> overrides
    "MLP, batch 2": ["model=mlp", "batch=2"],
    "MLP, batch 8": ["model=mlp", "batch=8"],
    "MLP, batch 128": ["model=mlp", "batch=128"],
    "CNN, batch 4": ["model=cnn", "batch=4"],
    "CNN, batch 128": ["model=cnn", "batch=128"],
}


def worker(overrides: list[str], threads: str, steps: int) -> None:
    import torch

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.config import to_dict
    from diagnose.training.loop import train

    cfg = composed("train", [*overrides, f"threads={threads}", f"steps={steps}", "diag=off", "data=synthetic",
                             "data.train_count=20000", "device=cpu"])
    run = build_run(cfg)
    picked = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as out:
        metrics = train(run, Path(out), to_dict(cfg))
    print(json.dumps({"steps_per_s": metrics.images_per_s / cfg.batch, "threads": picked}))


def measure(case: str, threads: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--threads", threads, "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(CASES[args.worker], args.threads, args.steps)

    cores = str(os.cpu_count() or 1)
    choices = ("1", cores, "auto")
    print(f"{args.steps} steps, {args.rounds} rounds, {cores} cores; training steps/s (median)")
    print(f"{'case':<16} {'1 thread':>9} {cores + ' threads':>10} {'auto':>9} {'auto picked':>12}")
    for case in CASES:
        runs: dict[str, list[dict]] = {choice: [] for choice in choices}
        for _ in range(args.rounds):
            for choice in choices:
                runs[choice].append(measure(case, choice, args.steps))
        speeds = {choice: statistics.median(r["steps_per_s"] for r in runs[choice]) for choice in choices}
        picks = sorted({r["threads"] for r in runs["auto"]})
        print(f"{case:<16} {speeds['1']:9.1f} {speeds[cores]:10.1f} {speeds['auto']:9.1f} "
              f"{'/'.join(map(str, picks)):>12}")


if __name__ == "__main__":
    main()
