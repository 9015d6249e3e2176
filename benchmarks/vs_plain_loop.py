"""The trainer against the loop a user would write by hand, side by side in one run.

    python benchmarks/vs_plain_loop.py                 # default CNN and an MLP, batch 8 and 128
    python benchmarks/vs_plain_loop.py --steps 100 --rounds 1

The plain loop is pytorch/examples' mnist: a DataLoader over a TensorDataset of normalised images,
shuffled, each batch copied to the device, loss.item() every 10 batches, torch's default optimizer
implementation and memory layout (the trainer picks fused updates, and channels_last for a CNN on the CPU).
The trainer runs the same model, optimizer settings, schedule and number of steps with diag=off and
diag=default. Each round runs all three once, each in a fresh process, in an order that rotates from
round to round. The table shows the median steps/s over the rounds (training steps only: evaluations
excluded on both sides), and the median and range over the rounds of each round's ratio to the plain
loop. Then memory: the peak RSS of each epoch of a 3-epoch run with diag=off and diag=default (and the
CUDA peak on a GPU).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from diagnose.build import build_run
from diagnose.cli.overrides import composed
from diagnose.config import TrainConfig, to_dict
from diagnose.data.batches import to_input
from diagnose.training.loop import train

FASHION = Path("/usr/share/datasets/fashion-mnist")
MODELS = {"cnn": ["model=cnn"], "mlp": ["model=mlp"]}
# the MLP's steps are ~20x shorter: 10x as many keep each timing several seconds long, so that a fresh
# process's warm-up and this VM's bursts of slowness weigh as little as in the CNN's
STEPS_SCALE = {"cnn": 1, "mlp": 10}
LOOPS = ["plain", "off", "default"]  # the hand-written loop, the trainer with diag=off, with diag=default


def config(model: str, batch: int, steps: int, diag: str, args: argparse.Namespace) -> TrainConfig:
    data = ["data=fashion_mnist", "data.subset=20000"] if args.data == "fashion_mnist" else \
        ["data=synthetic", "data.train_count=21000"]
    overrides = [*MODELS[model], *data, f"batch={batch}", f"steps={steps}", f"diag={diag}", f"device={args.device}",
                 "data.val_size=1000"]
    return composed("train", overrides)


def trainer_steps_per_s(cfg: TrainConfig) -> float:
    run = build_run(cfg)
    with tempfile.TemporaryDirectory() as out:
        metrics = train(run, Path(out), to_dict(cfg))
    return metrics.images_per_s / cfg.batch


def plain_steps_per_s(cfg: TrainConfig) -> float:
    """pytorch/examples mnist/main.py's loop, on the same model, data, optimizer settings and schedule."""
    run = build_run(cfg)  # the same model and init as the trainer's
    # the optimizer as a user writes it: torch's default update (the trainer picks the fused one)
    optimizer = torch.optim.SGD(run.model.parameters(), lr=run.lr, momentum=cfg.optim.momentum,
                                nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, run.scheduler.lr_lambdas[0])  # same schedule
    data = run.data
    images = to_input(data.train_x, data.mean, data.std, center=True).cpu()  # normalised once, on the host
    loader = DataLoader(TensorDataset(images, data.train_y.cpu()), batch_size=cfg.batch, shuffle=True,
                        drop_last=True)
    # the model as a user builds it: torch's default NCHW layout (the trainer may pick channels_last on the CPU)
    model, device = run.model.to(memory_format=torch.contiguous_format), run.device
    model.train()
    done, start = 0, time.perf_counter()
    while done < cfg.steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = run.loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done % 10 == 0:
                loss.item()  # pytorch/examples logs the loss every log_interval=10 batches
            if done == cfg.steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def steps_per_s_in_own_process(kind: str, model: str, batch: int, steps: int, args: argparse.Namespace) -> float:
    """One loop's speed, measured in a fresh process. In one shared process the plain CNN loop at batch 128 once
    ran at 10.6 steps/s in every round, against 15-17 alone, for a cause not pinned down (allocator state and
    oneDNN's caches are what the loops leave behind); a process of its own keeps the loops from timing each
    other's leftovers."""
    command = [sys.executable, __file__, "--one", kind, "--model", model, "--batch", str(batch), "--steps", str(steps),
               "--data", args.data, "--device", args.device]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return float(result.stdout.split()[-1])  # the last line; the trainer's progress bar comes before it


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def memory_over_epochs(args: argparse.Namespace) -> None:
    """Peak RSS of each epoch (its training steps and its evaluation) of a run with --memory-diag."""
    import diagnose.training.loop as loop

    peaks: list[float] = []
    evaluate_epoch = loop.evaluate_epoch

    def measured(*a: object, **k: object) -> object:
        entry = evaluate_epoch(*a, **k)
        peaks.append(peak_rss_mb())
        reset_peak_rss()
        return entry

    loop.evaluate_epoch = measured
    cfg = config("cnn", 128, 1, args.memory_diag, args)
    cfg.steps, cfg.epochs = None, args.epochs
    run = build_run(cfg)
    reset_peak_rss()
    with tempfile.TemporaryDirectory() as out:
        train(run, Path(out), to_dict(cfg))
    print(f"memory, default CNN, batch 128, diag={args.memory_diag}, peak RSS per epoch: "
          + ", ".join(f"{p:.1f} MB" for p in peaks)
          + f" (epoch {len(peaks)} - epoch 1: {peaks[-1] - peaks[0]:+.1f} MB)")
    if run.device.type == "cuda":
        print(f"CUDA peak allocated: {torch.cuda.max_memory_allocated() / 2**20:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist" if FASHION.is_dir() else "synthetic")
    parser.add_argument("--steps", type=int, default=300, help="CNN steps at batch 128; batch 8 runs 5x as many")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--one", choices=LOOPS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-diag", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the memory run")
    args = parser.parse_args()
    if args.memory:
        return memory_over_epochs(args)
    if args.one:
        cfg = config(args.model, args.batch, args.steps, "off" if args.one == "plain" else args.one, args)
        return print(plain_steps_per_s(cfg) if args.one == "plain" else trainer_steps_per_s(cfg))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"{args.data}, {args.steps} CNN steps at batch 128 ({5 * args.steps} at 8; the MLP 10x as many), "
          f"median of {args.rounds} rounds, on {device} ({torch.get_num_threads()} threads)")
    print(f"{'model':<6}{'batch':>6}{'plain':>9}{'diag=off':>10}{'ratio':>7}{'range':>12}{'default':>10}{'ratio':>7}"
          f"{'range':>12}")
    for model in args.models:
        for batch in (8, 128):
            speeds: dict[str, list[float]] = {kind: [] for kind in LOOPS}
            # small batches take short steps: more of them, so fixed costs (the last step's measurement and
            # probe, start-up) weigh as they do in a real run
            steps = args.steps * (5 if batch < 128 else 1) * STEPS_SCALE[model]
            for round_ in range(args.rounds):
                for kind in LOOPS[round_ % len(LOOPS):] + LOOPS[:round_ % len(LOOPS)]:  # each goes first in turn
                    speeds[kind].append(steps_per_s_in_own_process(kind, model, batch, steps, args))
            row = f"{model:<6}{batch:>6}{statistics.median(speeds['plain']):9.1f}"
            for diag in ("off", "default"):
                # each round's ratio: this machine's speed drifts between rounds more than between the runs
                # of one round, so the ratio within a round is the steadier measure
                ratios = [t / p for t, p in zip(speeds[diag], speeds["plain"], strict=True)]
                row += (f"{statistics.median(speeds[diag]):10.1f}{statistics.median(ratios):7.2f}"
                        f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>12}")
            print(row, flush=True)
    # in a process of its own: a fixed mmap threshold makes glibc return freed blocks to the OS, so peak RSS
    # follows what is live rather than the order of past allocations (it would slow the timings above)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for diag in ("off", "default"):
        subprocess.run([sys.executable, __file__, "--memory", "--memory-diag", diag, "--data", args.data, "--device",
                        args.device, "--epochs", str(args.epochs)], env=env, check=True)


if __name__ == "__main__":
    main()
