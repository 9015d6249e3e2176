"""A sweep of tiny jobs one at a time (Hydra's basic launcher) against side by side, one worker a core, each job's
threads its share: diagnose's `local` launcher (workers forked from the launching process) and the joblib launcher
(fresh worker processes). Wall time of the whole sweep, measured in one run, the ways interleaved round by round.

    python benchmarks/sweep.py
    python benchmarks/sweep.py --steps 300 --rounds 2

The sweep is the batch-size question, `-m norm=bn,gn batch=2,4,8,16,32` (10 jobs), on synthetic data for a fixed
number of steps. The joblib launcher comes with pip install -e ".[cluster]".
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["-m", "norm=bn,gn", "batch=2,4,8,16,32", "data=synthetic", "model=mlp"]


def run_sweep(extra: list[str], steps: int) -> float:
    folder = tempfile.mkdtemp(prefix="diagnose-sweep-")
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diagnose", "train", *SWEEP, f"steps={steps}",
                        f"hydra.sweep.dir={folder}/sweep", *extra], check=True, capture_output=True, cwd=folder)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per combination: 2 makes it a 20-job sweep")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    common = [f"device={args.device}", *([f"seed={','.join(map(str, range(args.seeds)))}"] if args.seeds > 1 else [])]
    if args.device == "cuda":  # several tiny jobs share the one GPU
        ways = {"basic (one at a time)": [],
                "local, 4 jobs per GPU": ["hydra/launcher=local", "hydra.launcher.workers_per_device=4"],
                "local, 8 jobs per GPU": ["hydra/launcher=local", "hydra.launcher.workers_per_device=8"]}
    else:
        ways = {"basic (one at a time)": [],
                f"local, {cores} workers": ["hydra/launcher=local"],
                f"joblib, {cores} workers": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cores}"]}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, extra in ways.items():
            times[name].append(run_sweep([*common, *extra], args.steps))
    basic = statistics.median(times["basic (one at a time)"])
    jobs = 10 * args.seeds
    print(f"{jobs}-job sweep ({' '.join(SWEEP[1:3])}{' x seeds' if args.seeds > 1 else ''}, MLP, synthetic, "
          f"{args.steps} steps each) on {args.device}, {cores} cores, median of {args.rounds}")
    for name in ways:
        median = statistics.median(times[name])
        print(f"{name:<24} {median:7.1f} s   throughput {basic / median:5.2f}x")


if __name__ == "__main__":
    main()
