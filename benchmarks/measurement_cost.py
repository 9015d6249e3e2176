"""What one measurement of the opt-in instruments costs, in training steps: the gradient noise scale
(diag.noise_every) and the curvature (diag.curvature_every), timed side by side with the training step.

    python benchmarks/measurement_cost.py                  # default CNN, batch 128, Fashion-MNIST (synthetic if absent)
    python benchmarks/measurement_cost.py --model mlp --repeats 5

Each is timed --repeats times, interleaved (a slow moment of the machine hits all alike); medians are shown, and
each measurement as a multiple of the training step. With a measurement every N steps, the run slows by about
that multiple / N.
"""

import argparse
import statistics
import time
from pathlib import Path

FASHION = Path("/usr/share/datasets/fashion-mnist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist" if FASHION.is_dir() else "synthetic")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.diagnostics.curvature import curvature
    from diagnose.diagnostics.noise_scale import measure
    from diagnose.training.batches import noise_batches, training_batch
    from diagnose.training.loop import train_step

    cfg = composed("train", [f"model={args.model}", f"data={args.data}", f"batch={args.batch}", "diag=off",
                             "data.val_size=1000", f"device={args.device}"])
    run = build_run(cfg)
    run.model.train()
    generator = torch.Generator(device=run.device).manual_seed(0)
    diag = run.diag
    curvature_x = run.prepare(run.data.train_x[:diag.curvature_batch])
    curvature_y = run.data.train_y[:diag.curvature_batch]

    def step() -> None:
        idx = torch.randint(len(run.data.train_y), (run.batch,), device=run.device)
        x, y = training_batch(run, idx, generator)
        train_step(run, x, y)

    def noise() -> None:
        measure(run.model, run.loss_fn, noise_batches(run, 1), diag.noise_micro)  # one batch: a measurement's unit

    def sharpness() -> None:
        curvature(run.model, run.loss_fn, curvature_x, curvature_y, seed=0, iterations=diag.curvature_iterations,
                  samples=diag.curvature_samples)

    def seconds(work, times: int = 1) -> float:
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(times):
            work()
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / times

    for _ in range(5):  # warm up: allocator, kernels, lazy imports
        step()
    noise(), sharpness()
    timed: dict[str, list[float]] = {"training step": [], "noise scale": [], "curvature": []}
    for _ in range(args.repeats):
        timed["training step"].append(seconds(step, 20))
        timed["noise scale"].append(seconds(noise))
        timed["curvature"].append(seconds(sharpness))
    step_s = statistics.median(timed["training step"])
    print(f"{args.model}, {args.data}, batch {args.batch}, on {run.device}; noise scale: one batch of "
          f"{diag.noise_batch} examples in {diag.noise_micro} micro-batches (a measurement draws 1 to "
          f"{diag.noise_max_batch // diag.noise_batch}); curvature: {diag.curvature_batch} examples, "
          f"<= {diag.curvature_iterations} power iterations + {diag.curvature_samples} Hutchinson vectors")
    print(f"{'what':<14} {'ms':>9} {'steps':>7}")
    for name, values in timed.items():
        median = statistics.median(values)
        print(f"{name:<14} {median * 1000:9.1f} {median / step_s:7.1f}")


if __name__ == "__main__":
    main()
