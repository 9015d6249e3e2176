"""Where diag=default's measuring steps spend their time: every step of a run timed on its own, by what it measured.

    python benchmarks/profile_steps.py                      # default CNN, Fashion-MNIST, 300 steps, 1 thread
    python benchmarks/profile_steps.py --threads 2 --profile cprofile   # and the measuring steps' top functions

The loop is train()'s (a batch, the monitor's moments around train_step), without evaluations, which steps/s leaves
out too. Each step is put in one class: plain (nothing measured), stats (per-layer statistics, perhaps histograms)
hist (histograms and statistics) or probe (the dead-unit
probe, perhaps more); a class's extra cost is its steps' time above the median plain step.
Steps are timed in the process's CPU time by default, not wall time: on a machine shared with other jobs, a moment
without the CPU then costs nothing (with threads=1 it is the step's own work; with more, threads spinning while they
wait count: `--clock wall` for those).
A plain step of diag=default against one of diag=off is what hooks and checks cost on the steps that measure nothing.
`--profile cprofile` profiles the measuring steps only (top entries by self time); `--profile torch` gives
torch.profiler's table of one statistics step.
"""

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

FASHION = Path("/usr/share/datasets/fashion-mnist")


def run_steps(mode: str, args: argparse.Namespace) -> tuple[list[tuple[str, float]], str]:
    """(class, seconds) of each step of a `mode` run, and the profile's text (empty without --profile)."""
    from torch.utils.tensorboard import SummaryWriter

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.diagnostics.dead_units import PROBES
    from diagnose.diagnostics.instruments import for_training
    from diagnose.diagnostics.layer_stats import CURVE_POINTS, SNAPSHOTS, due
    from diagnose.training.batches import batch_indices, training_batch
    from diagnose.training.loop import train_step

    overrides = [f"diag={mode}", f"steps={args.steps}", f"batch={args.batch}", f"data={args.data}",
                 "data.val_size=1000", f"threads={args.threads}"]
    overrides += ["data.subset=10000"] if args.data != "synthetic" else ["data.train_count=11000"]
    run = build_run(composed("train", overrides))
    diag, last = run.diag, run.total_steps
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    profiler = cProfile.Profile() if args.profile == "cprofile" and mode != "off" else None
    torch_table = ""
    timed: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as out, SummaryWriter(out) as writer:
        monitor = for_training(run, writer)
        run.model.train()
        for step, idx in zip(range(1, last + 1), batch_indices(run, 0), strict=False):
            kind = ("probe" if due(step, diag.probe_every, last, PROBES) else
                    "hist" if due(step, diag.hist_every, last, SNAPSHOTS) else
                    "stats" if due(step, diag.every, last, CURVE_POINTS) else "plain")
            profiling = kind != "plain" and mode != "off"
            torch_profile = args.profile == "torch" and kind == "stats" and step > 1 and not torch_table
            started = clock()
            if profiling and profiler:
                profiler.enable()
            context = torch.profiler.profile(record_shapes=False) if torch_profile else None
            if context:
                context.__enter__()
            x, y = training_batch(run, idx, generator)
            monitor.before_step(step, x, y)
            train_step(run, x, y, monitor, step)
            monitor.after_step(step)
            if context:
                context.__exit__(None, None, None)
                torch_table = context.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            if profiling and profiler:
                profiler.disable()
            timed.append((kind, clock() - started))
        monitor.close()
    text = torch_table
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(args.sort).print_stats(args.top)
        text = stream.getvalue()
    return timed, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist" if FASHION.is_dir() else "synthetic")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--modes", nargs="+", default=["off", "default"])
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="the process's CPU time (a shared machine's waits left out) or wall time")
    parser.add_argument("--profile", choices=["cprofile", "torch"])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sort", default="tottime", help="the profile's order: tottime (self time) or cumulative")
    args = parser.parse_args()

    runs = {mode: run_steps(mode, args) for mode in args.modes}
    base = statistics.median(s for kind, s in runs[args.modes[0]][0] if kind == "plain")
    print(f"default CNN, {args.data}, batch {args.batch}, {args.steps} steps, threads={args.threads}, {args.clock} "
          f"time; step 1 left out (warm-up); ms")
    print(f"{'diag':<9} {'class':<6} {'steps':>5} {'median':>7} {'extra/step':>10} {'extra total':>11} {'total':>8}")
    for mode, (timed, _) in runs.items():
        plain = statistics.median(s for kind, s in timed if kind == "plain")
        for kind in ("plain", "stats", "hist", "probe"):
            seconds = [s for k, s in timed[1:] if k == kind]
            if seconds:
                extra = [s - plain for s in seconds] if kind != "plain" else [s - base for s in seconds]
                print(f"{mode:<9} {kind:<6} {len(seconds):5d} {1e3 * statistics.median(seconds):7.2f} "
                      f"{1e3 * statistics.median(extra):10.2f} {1e3 * sum(extra):11.1f} {1e3 * sum(seconds):8.1f}")
        total = sum(s for _, s in timed[1:])
        print(f"{mode:<9} {'all':<6} {len(timed) - 1:5d} {'':>7} {'':>10} {'':>11} {1e3 * total:8.1f}")
        print(f"{mode:<9} {'step 1':<6} {1:5d} {1e3 * timed[0][1]:7.2f}")
    for mode, (_, text) in runs.items():
        if text:
            print(f"\n{mode}: the measuring steps' profile\n{text}")


if __name__ == "__main__":
    main()
