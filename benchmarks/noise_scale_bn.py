"""How BatchNorm's per-micro-batch statistics move the gradient noise scale estimate, against a network without BN.

    python benchmarks/noise_scale_bn.py                    # default CNN on Fashion-MNIST (synthetic if absent)
    python benchmarks/noise_scale_bn.py --steps 200 --repeats 20

Each network is trained for --steps steps, then, at those fixed weights, B_simple is estimated with micro-batches
of b = 16, 32, 64, 128 and 256 examples (the default noise_batch of 4096 split 256 to 16 ways), --repeats fresh
batches each, averaging |G|² and tr(Σ) before the ratio as a run does. Without BN the estimator is unbiased whatever b
(the columns should agree within their noise); with BN each micro-batch is normalised with its own statistics, so
what is measured is the noise of a network whose BN sees b examples, and it moves with b.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

FASHION = Path("/usr/share/datasets/fashion-mnist")
MICRO_SIZES = (16, 32, 64, 128, 256)
NOISE_BATCH = 4096


def estimate(run, micro: int, repeats: int) -> tuple[float, float, float]:
    """(B_simple, mean |G|², mean tr(Σ)) at the run's current weights from `repeats` batches of NOISE_BATCH."""
    from diagnose.diagnostics.noise_scale import measure
    from diagnose.training.batches import noise_batches

    grad_sqs, traces = [], []
    for repeat in range(repeats):  # one batch each (the default noise_batch, NOISE_BATCH)
        estimate = measure(run.model, run.loss_fn, noise_batches(run, 10_000 + repeat), NOISE_BATCH // micro)
        grad_sqs.append(estimate.grad_sq)
        traces.append(estimate.trace_cov)
    grad_sq, trace = statistics.mean(grad_sqs), statistics.mean(traces)
    return trace / grad_sq, grad_sq, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist" if FASHION.is_dir() else "synthetic")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()

    from diagnose.build import build_run
    from diagnose.cli.overrides import composed
    from diagnose.config import to_dict
    from diagnose.training.loop import train

    print(f"default CNN, {args.data}, trained {args.steps} steps at batch 128, then B_simple from {args.repeats} "
          f"batches of {NOISE_BATCH} split into micro-batches of b:")
    print(f"{'norm':<6} " + " ".join(f"{'b=' + str(b):>9}" for b in MICRO_SIZES))
    for norm in ("none", "gn", "bn"):
        cfg = composed("train", [f"norm={norm}", f"data={args.data}", f"steps={args.steps}", "diag=off",
                                 "data.val_size=1000", "device=cpu"])
        run = build_run(cfg)
        with tempfile.TemporaryDirectory() as out:
            train(run, Path(out), to_dict(cfg))
        run.model.train()  # as during training: BN normalises each micro-batch with its own statistics
        row = [estimate(run, size, args.repeats)[0] for size in MICRO_SIZES]
        print(f"{norm:<6} " + " ".join(f"{value:9.0f}" for value in row))


if __name__ == "__main__":
    main()
