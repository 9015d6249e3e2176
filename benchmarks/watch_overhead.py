"""What `diagnose.watch` costs a plain loop, beside what the diagnostics cost `diagnose train`, in one run.

    python benchmarks/watch_overhead.py                 # default CNN, Fashion-MNIST subset (synthetic if absent)
    python benchmarks/watch_overhead.py --steps 200 --rounds 2 --threads 2
    python benchmarks/watch_overhead.py --clock cpu --threads 1   # on a machine others share

Four loops on the same model, initial weights, optimizer, schedule and batches (the trainer's, device-resident):
a plain loop (forward, backward, step, the loss read every 10 steps as pytorch/examples logs it), the same loop
under `diagnose.watch` with diag=default and the trainer's probe batch, and `diagnose train` with diag=off and
diag=default. Each runs in a fresh process, the four in an order that rotates from round to round; steps/s
counts training steps only (the trainer's evaluations are out of it, its log windows and the instruments' probes
in it; the watch's closing findings are out). The table shows the median steps/s and the median and range over the
rounds of each round's ratio to the plain loop. `--clock cpu` counts the CPU time of the process's steps instead
of the wall clock's: on a machine other jobs share (a load of 10 on 2 cores gave wall-clock ratios of 0.1-3.2
from round to round), with one thread, the one measure they leave alone.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workload  # benchmarks/: the run these benchmarks time

LOOPS = ["plain", "watch", "off", "default"]  # a plain loop, under watch, diagnose train diag=off and default


def config(diag: str, args: argparse.Namespace):  # noqa: ANN201 - a TrainConfig, imported with torch
    from diagnose.cli.overrides import composed

    return composed("train", [*workload.data_overrides(args.data), f"batch={args.batch}", f"steps={args.steps}",
                              f"diag={diag}", f"device={args.device}", f"threads={args.threads}"])


def steps_per_s(kind: str, args: argparse.Namespace) -> float:
    """One loop's training steps per second, in this process."""
    import torch

    import diagnose
    import diagnose.training.loop as loop
    from diagnose.build import build_run
    from diagnose.config import to_dict
    from diagnose.training.batches import batch_indices, training_batch

    cfg = config("default" if kind == "watch" else "off" if kind == "plain" else kind, args)
    run = build_run(cfg)
    with tempfile.TemporaryDirectory() as out:
        if kind in ("off", "default") and args.clock == "wall":
            return loop.train(run, Path(out), to_dict(cfg)).images_per_s / cfg.batch
        if kind in ("off", "default"):  # the CPU time of its steps, the instruments' hooks inside them
            cpu = [0.0]
            train_step = loop.train_step

            def timed(*step_args: object) -> object:
                started = time.process_time()
                result = train_step(*step_args)
                cpu[0] += time.process_time() - started
                return result

            loop.train_step = timed
            loop.train(run, Path(out), to_dict(cfg))
            return cfg.steps / cpu[0]
        watch = None
        if kind == "watch":
            probe = run.prepare(run.data.val_x[:cfg.diag.probe_size])  # the trainer's: held-out examples
            watch = diagnose.watch(run.model, run.optimizer, out, probe=probe, diag="default", steps=cfg.steps)
        generator = torch.Generator(device=run.device).manual_seed(run.seed)
        run.model.train()
        # the wall clock over the whole loop (a GPU's queue drains at the last loss read); the CPU clock over each
        # step as the trainer's is timed, its batch's preparation left out
        seconds, start = 0.0, time.perf_counter()
        for step, idx in zip(range(1, cfg.steps + 1), batch_indices(run, 0), strict=False):
            x, y = training_batch(run, idx, generator)
            started = time.process_time()
            loss = run.loss_fn(run.model(x), y)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            seconds += time.process_time() - started
            if step % 10 == 0 or step == cfg.steps:
                loss.item()  # pytorch/examples logs the loss every 10 batches; the last one waits for the device
        seconds = seconds if args.clock == "cpu" else time.perf_counter() - start
        if watch is not None:
            watch.close()
    return cfg.steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload.add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="2", help="CPU threads of every loop (a number, or auto)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--one", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        if args.threads != "auto":
            torch.set_num_threads(int(args.threads))  # the plain loops' threads, as threads= sets the trainer's
        return print(steps_per_s(args.one, args))
    speeds: dict[str, list[float]] = {kind: [] for kind in LOOPS}
    for round_ in range(args.rounds):
        for kind in LOOPS[round_ % len(LOOPS):] + LOOPS[:round_ % len(LOOPS)]:  # each goes first in turn
            command = [sys.executable, __file__, "--one", kind, "--data", args.data, "--steps", str(args.steps),
                       "--batch", str(args.batch), "--threads", args.threads, "--device", args.device,
                       "--clock", args.clock]
            result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            speeds[kind].append(float(result.stdout.split()[-1]))  # the last line: the findings come before it
    print(f"default CNN, {args.data}, batch {args.batch}, {args.steps} steps, threads={args.threads}, "
          f"{args.clock} clock, median of {args.rounds} rounds")
    print(f"{'loop':<22}{'steps/s':>9}{'vs plain':>10}{'range':>13}")
    names = {"plain": "plain loop", "watch": "plain loop + watch", "off": "train diag=off",
             "default": "train diag=default"}
    for kind in LOOPS:
        # each round's ratio: the machine drifts between rounds more than within one
        ratios = [s / p for s, p in zip(speeds[kind], speeds["plain"], strict=True)]
        print(f"{names[kind]:<22}{statistics.median(speeds[kind]):9.2f}{statistics.median(ratios):10.3f}"
              f"{f'{min(ratios):.3f}-{max(ratios):.3f}':>13}")


if __name__ == "__main__":
    main()
