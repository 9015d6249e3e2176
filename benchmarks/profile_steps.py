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
`--profile cprofile` profiles the measuring steps only (top entries by self time); `--profile torch` gives,
from torch.profiler, the ops a statistics, histogram and probe step spend more self CPU time in than a plain step
(the mean of the first few steps of each class).
"""

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time

import torch
import workload  # benchmarks/: the run these benchmarks time

PROFILED = 5  # steps of each class that --profile torch profiles


def run_steps(mode: str, args: argparse.Namespace) -> tuple[list[tuple[str, float]], str]:
    """(class, seconds) of each step of a `mode` run, and the profile's text (empty without --profile)."""
    from torch.utils.tensorboard import SummaryWriter

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.diagnostics.dead_units import PROBES
    from diagnose.diagnostics.layer_stats import CURVE_POINTS, SNAPSHOTS, due
    from diagnose.diagnostics.watch import Watch
    from diagnose.training.batches import batch_indices, training_batch
    from diagnose.training.loop import monitor_for, train_step

    overrides = [f"diag={mode}", f"steps={args.steps}", f"batch={args.batch}", *workload.data_overrides(args.data),
                 f"threads={args.threads}"]
    run = build_run(composed("train", overrides))
    diag, last = run.diag, run.total_steps
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    profiler = cProfile.Profile() if args.profile == "cprofile" and mode != "off" else None
    # class -> op -> [self CPU us, calls] summed over its first PROFILED steps after step 1 (torch.profiler)
    ops: dict[str, dict[str, list[float]]] = {}
    profiled: dict[str, int] = {}
    timed: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as out, SummaryWriter(out) as writer:
        step_batch: list = []
        watch = Watch(run.model, run.optimizer, monitor_for(run, writer, step_batch))
        run.model.train()
        for step, idx in zip(range(1, last + 1), batch_indices(run, 0), strict=False):
            kind = ("probe" if due(step, diag.probe_every, last, PROBES) else
                    "hist" if due(step, diag.hist_every, last, SNAPSHOTS) else
                    "stats" if due(step, diag.every, last, CURVE_POINTS) else "plain")
            profiling = kind != "plain" and mode != "off"
            torch_profile = args.profile == "torch" and mode != "off" and step > 1 and profiled.get(kind, 0) < PROFILED
            started = clock()
            if profiling and profiler:
                profiler.enable()
            context = torch.profiler.profile(record_shapes=False) if torch_profile else None
            if context:
                context.__enter__()
            x, y = training_batch(run, idx, generator)
            step_batch[:] = [(x, y)]
            train_step(run, x, y)  # the watch measures what is due on the way
            if context:
                context.__exit__(None, None, None)
                profiled[kind] = profiled.get(kind, 0) + 1
                for event in context.key_averages():
                    total = ops.setdefault(kind, {}).setdefault(event.key, [0.0, 0])
                    total[0] += event.self_cpu_time_total
                    total[1] += event.count
            if profiling and profiler:
                profiler.disable()
            timed.append((kind, clock() - started))
        watch.detach()
    text = extra_ops(ops, profiled, args.top) if "plain" in ops else ""  # main says why there is none
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(args.sort).print_stats(args.top)
        text = stream.getvalue()
    return timed, text


def extra_ops(ops: dict[str, dict[str, list[float]]], profiled: dict[str, int], top: int) -> str:
    """Per class, the ops whose self CPU time per step exceeds a plain step's most: what measuring costs, by op."""
    plain = {key: (us / profiled["plain"], calls / profiled["plain"]) for key, (us, calls) in ops["plain"].items()}
    lines = []
    for kind in ("stats", "hist", "probe"):
        if kind not in ops:
            continue
        per_step = {key: (us / profiled[kind], calls / profiled[kind]) for key, (us, calls) in ops[kind].items()}
        extra = {key: (us - plain.get(key, (0, 0))[0], calls - plain.get(key, (0, 0))[1])
                 for key, (us, calls) in per_step.items()}
        total = sum(us for us, _ in per_step.values()) - sum(us for us, _ in plain.values())
        lines.append(f"{kind} step (mean of {profiled[kind]}) against a plain one (mean of {profiled['plain']}): "
                     f"{total / 1e3:+.2f} ms self CPU")
        lines.append(f"  {'op':<44} {'extra ms':>9} {'extra calls':>11}")
        for key, (us, calls) in sorted(extra.items(), key=lambda item: -item[1][0])[:top]:
            lines.append(f"  {key[:44]:<44} {us / 1e3:9.2f} {calls:11.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_arguments(parser)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--modes", nargs="+", default=["off", "default"])
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="the process's CPU time (a shared machine's waits left out) or wall time")
    parser.add_argument("--profile", choices=["cprofile", "torch"])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sort", default="tottime", help="the profile's order: tottime (self time) or cumulative")
    args = parser.parse_args()

    runs = {mode: run_steps(mode, args) for mode in args.modes}
    if not all(any(kind == "plain" for kind, _ in timed[1:]) for timed, _ in runs.values()):
        raise SystemExit(f"{args.steps} steps measure at every step: no plain step to compare with (try --steps 300)")
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
