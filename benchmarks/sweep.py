"""A sweep of tiny jobs one at a time (Hydra's basic launcher) against side by side (the joblib launcher, one
worker a core, each job's threads its share): wall time of the whole sweep, measured in one run.

    python benchmarks/sweep.py
    python benchmarks/sweep.py --steps 300 --rounds 2

The sweep is the batch-size question, `-m norm=bn,gn batch=2,4,8,16,32` (10 jobs), on synthetic data for a fixed
number of steps. Needs the launcher: pip install -e ".[cluster]".
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["-m", "norm=bn,gn", "batch=2,4,8,16,32", "data=synthetic", "model=mlp", "device=cpu"]


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
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ways = {"basic (one at a time)": [],
            f"joblib, {cores} workers": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cores}"]}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, extra in ways.items():
            times[name].append(run_sweep(extra, args.steps))
    basic = statistics.median(times["basic (one at a time)"])
    print(f"10-job sweep ({' '.join(SWEEP[1:3])}, MLP, synthetic, {args.steps} steps each), {cores} cores, "
          f"median of {args.rounds}")
    for name in ways:
        median = statistics.median(times[name])
        print(f"{name:<24} {median:7.1f} s   throughput {basic / median:5.2f}x")


if __name__ == "__main__":
    main()
