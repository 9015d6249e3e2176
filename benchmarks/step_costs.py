"""What one measurement costs: plain, statistics, probe and statistics + probe steps, interleaved in one process.

    python benchmarks/step_costs.py                    # default CNN, Fashion-MNIST, batch 128, 1 thread, CPU time
    python benchmarks/step_costs.py --threads 2        # wall time (threads waiting for each other count)

Each round runs one step of each kind, in turn, with the instruments of `diag=default` attached for that step
only (statistics: ActivationStats, BatchNormStats, WeightStats; probe: DeadUnits on 512 held-out examples), so a
slow moment of a shared machine hits every kind alike; the table gives each kind's median extra time over a plain
step, in ms and in training steps, and what the cadences of a run of `--steps` steps add up to. A step of
profile_steps.py's run is one of these, at one point of the run; here each kind is measured many times over.
"""

import argparse
import statistics
import time

import torch
import workload  # benchmarks/: the run these benchmarks time

KINDS = ("plain", "stats", "probe", "stats+probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist" if workload.FASHION.is_dir() else "synthetic")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=300, help="the run whose cadences the last line adds up")
    args = parser.parse_args()

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.diagnostics.batchnorm import BatchNormStats
    from diagnose.diagnostics.dead_units import PROBES, DeadUnits
    from diagnose.diagnostics.layer_stats import CURVE_POINTS, ActivationStats, Schedule, WeightStats, due
    from diagnose.diagnostics.monitor import Monitor
    from diagnose.diagnostics.watch import Watch
    from diagnose.training.batches import batch_indices, training_batch
    from diagnose.training.loop import train_step

    overrides = ["diag=default", "steps=100000", *workload.data_overrides(args.data), f"threads={args.threads}"]
    run = build_run(composed("train", overrides))
    torch.set_num_threads(args.threads)
    always = Schedule(always=True)
    probe_x = run.prepare(run.data.val_x[:run.diag.probe_size])

    def instruments(kind: str) -> list:
        found = []
        if "stats" in kind:
            found += [ActivationStats(run.layers, always, run.diag), BatchNormStats(run.layers, always),
                      WeightStats(run.layers, always, run.diag)]
        if "probe" in kind:
            found.append(DeadUnits(run.model, run.layers, probe_x, always=True, chunk=max(run.batch, 128)))
        return found

    clock = time.process_time if args.threads == 1 else time.perf_counter
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    batches = iter(batch_indices(run, 0))
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    run.model.train()
    for warm_up in [True] * 3 + [False] * args.rounds:
        for kind in KINDS:
            x, y = training_batch(run, next(batches), generator)
            watch = Watch(run.model, run.optimizer, Monitor(run.layers, instruments(kind)))  # writes nowhere
            started = clock()
            train_step(run, x, y)
            elapsed = clock() - started
            watch.detach()
            if not warm_up:
                times[kind].append(elapsed)

    plain = statistics.median(times["plain"])
    extra = {kind: statistics.median(times[kind]) - plain for kind in KINDS[1:]}
    print(f"default CNN, {args.data}, batch {run.batch}, threads={args.threads}, "
          f"{'CPU' if args.threads == 1 else 'wall'} time, median of {args.rounds} rounds")
    print(f"{'step':<12} {'ms':>7} {'extra ms':>9} {'in steps':>9}")
    print(f"{'plain':<12} {1e3 * plain:7.2f}")
    for kind, seconds in extra.items():
        print(f"{kind:<12} {1e3 * (plain + seconds):7.2f} {1e3 * seconds:9.2f} {seconds / plain:9.2f}")
    # the steps the cadences of diag=default measure in a run of --steps steps (its every= and probe_every=)
    measured = [sum(due(step, every, args.steps, points) for step in range(1, args.steps + 1))
                for every, points in ((run.diag.every, CURVE_POINTS), (run.diag.probe_every, PROBES))]
    total = measured[0] * extra["stats"] + measured[1] * extra["probe"]
    print(f"a run of {args.steps} steps: {measured[0]} statistics steps and {measured[1]} probes = "
          f"{total / plain:.1f} training steps ({100 * total / (args.steps * plain):.1f} %; histograms not counted)")


if __name__ == "__main__":
    main()
