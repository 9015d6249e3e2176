"""What diagnostics cost: training steps/s and peak memory with diag=off, default and full, side by side.

    python benchmarks/overhead.py                      # default CNN, Fashion-MNIST subset (synthetic if absent)
    python benchmarks/overhead.py --data synthetic --steps 200 --rounds 2
    python benchmarks/overhead.py --threads 2                 # the CPU threads fixed, as `threads=2` fixes them

Each measurement runs in a fresh subprocess (so peak memory is its own), the modes interleaved round by
round (so a slow moment of the machine hits every mode alike); the table shows medians and ratios to off.
Steps/s counts training steps only (per-layer statistics, histograms and dead-unit probes included; the
once-per-epoch evaluations that every mode does are not).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import workload  # benchmarks/: the run these benchmarks time

# mode -> its overrides: the presets, and the default one with the gradient noise scale turned on
MODES = {"off": ["diag=off"], "default": ["diag=default"], "default+noise": ["diag=default", "diag.noise_every=100"],
         "full": ["diag=full"]}


def worker(args: argparse.Namespace) -> None:
    import torch

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.config import to_dict
    from diagnose.training.loop import train

    overrides = [*MODES[args.worker], f"steps={args.steps}", f"device={args.device}", f"batch={args.batch}",
                 *workload.data_overrides(args.data), f"threads={args.threads}"]
    cfg = composed("train", overrides)
    run = build_run(cfg)
    reset_peak_rss()  # measure the peak during training, not while the dataset was decompressed
    with tempfile.TemporaryDirectory() as out:
        metrics = train(run, Path(out), to_dict(cfg))
    result = {"steps_per_s": metrics.images_per_s / cfg.batch, "peak_rss_mb": peak_rss_mb(),
              "device": str(run.device)}
    if run.device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM) to its current size."""
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        clear_refs.write_text("5")


def peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak since start (kB on Linux)


def measure(mode: str, args: argparse.Namespace, steps: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--steps", str(steps), "--data", args.data,
           "--device", args.device, "--batch", str(args.batch), "--threads", args.threads]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", default="auto", help="CPU threads: auto (the CLI's default) or a number")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="the modes to measure (off is always among them: the ratios are to it)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    modes = ["off", *(mode for mode in args.modes if mode != "off")]
    speed_runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            speed_runs[mode].append(measure(mode, args, args.steps))
    # Memory in runs of their own: a fixed mmap threshold makes glibc hand every large block back to the OS
    # when it is freed, so peak RSS follows what is live rather than the order of past allocations (it also
    # slows the CPU down, which is why speed is measured without it).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    memory_runs = {mode: measure(mode, args, min(args.steps, 100), env) for mode in modes}

    device = speed_runs["off"][0].get("gpu", speed_runs["off"][0]["device"])
    print(f"default CNN, {args.data}, batch {args.batch}, {args.steps} steps, {args.rounds} rounds, "
          f"threads={args.threads}, on {device}")
    memory_key = "cuda_peak_mb" if "cuda_peak_mb" in memory_runs["off"] else "peak_rss_mb"
    off_speed = statistics.median(r["steps_per_s"] for r in speed_runs["off"])
    off_memory = memory_runs["off"][memory_key]
    print(f"{'diag':<14} {'steps/s':>8} {'vs off':>7} {memory_key:>13} {'vs off':>7}")
    for mode in modes:
        speed = statistics.median(r["steps_per_s"] for r in speed_runs[mode])
        memory = memory_runs[mode][memory_key]
        print(f"{mode:<14} {speed:8.2f} {speed / off_speed:7.3f} {memory:13.1f} {memory / off_memory:7.3f}")


if __name__ == "__main__":
    main()
