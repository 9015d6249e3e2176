"""The CUDA path, checked on a real GPU: one verdict per point, then the benchmark against a plain loop.

    bash benchmarks/gpu_check.sh          # sets up a venv if needed, then runs this

Every point below has only ever run on CPUs in the test suite; here each runs on `cuda` and prints PASS or FAIL
with what it measured:
  1. the data sits on the GPU and is batched there; CIFAR-style augmentation runs there
  2. a default-CNN run trains and evaluates on the GPU
  3. the loss watch (pinned-memory flags, read a step later) stops a diverging run within two steps and names
     the first non-finite layer
  4. bf16 autocast trains to a finite loss
  5. the fused optimizers follow torch's default update
  6. an interrupted run resumes on the GPU and ends like an uninterrupted one (to GPU nondeterminism)
Then `benchmarks/vs_plain_loop.py --device cuda` (goal: the trainer >= 3x the plain DataLoader loop at batch 128
for the default CNN), and `benchmarks/sweep.py --device cuda`: a 20-job sweep of tiny nets one at a time against
the local launcher's workers sharing the GPU (goal: >= 5x the throughput).
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from diagnose.build import build_run
from diagnose.cli.overrides import composed
from diagnose.components.optim import clamp_gates_after_each_step, param_groups
from diagnose.config import to_dict
from diagnose.training.loop import train
from diagnose.training.outputs import load_checkpoint

# DIAGNOSE_CHECK_DEVICE=cpu runs the same checks on the CPU: a dry run of this script itself
DEVICE = os.environ.get("DIAGNOSE_CHECK_DEVICE", "cuda")
SYNTHETIC = ["data=synthetic", "data.train_count=4000", "data.test_count=1000", "data.val_size=500", f"device={DEVICE}"]
VERDICTS: list[tuple[str, bool, str]] = []


def check(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    """Run the decorated check in a fresh folder and record PASS/FAIL with what it says (or its error)."""

    def decorate(work: Callable[[Path], str]) -> Callable[[Path], str]:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            try:
                said, passed = work(Path(folder)), True
            except AssertionError as err:
                said, passed = f"{err}", False
            except Exception as err:  # noqa: BLE001 - a check that crashes fails, with its traceback shown
                said, passed = f"{type(err).__name__}: {err}\n{traceback.format_exc()}", False
        VERDICTS.append((name, passed, f"{said} ({time.perf_counter() - started:.0f} s)"))
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {said}", flush=True)
        return work

    return decorate


def run_of(*overrides: str):
    config = composed("train", [*SYNTHETIC, *overrides])
    return config, build_run(config)


def main() -> None:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA device: this script checks the GPU path. (torch.cuda.is_available() is False.)")
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (a dry run on the CPU)"
    print(f"GPU: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)

    @check("data on the device, augmentation there")
    def _(folder: Path) -> str:
        _, run = run_of("data.augment=true", "steps=5")
        assert run.data.train_x.device.type == DEVICE == run.data.test_x.device.type, "the dataset is elsewhere"
        from diagnose.training.batches import batch_indices, training_batch

        x, y = training_batch(run, next(batch_indices(run, 0)), torch.Generator(device=run.device).manual_seed(0))
        assert x.device.type == DEVICE == y.device.type, "a batch left the device"
        return f"train_x {tuple(run.data.train_x.shape)} uint8 on {run.data.train_x.device}, batch on {x.device}"

    @check("a default-CNN run trains and evaluates")
    def _(folder: Path) -> str:
        config, run = run_of("epochs=2", "steps=null")
        metrics = train(run, folder, to_dict(config))
        assert metrics.status == "completed", metrics.status
        assert metrics.final.test_acc > 0.5, f"test accuracy {metrics.final.test_acc:.3f}"
        return f"{metrics.steps} steps, test acc {metrics.final.test_acc:.3f}, {metrics.images_per_s:,.0f} img/s"

    @check("the loss watch stops a diverging run and names the layer")
    def _(folder: Path) -> str:
        config, run = run_of("lr=1e12", "norm=none", "steps=50", "optim.momentum=0.0")
        metrics = train(run, folder, to_dict(config))
        found = metrics.nonfinite
        assert metrics.status == "diverged" and found is not None, metrics.status
        assert metrics.steps - found.step <= 2, f"stopped at step {metrics.steps}, first NaN at {found.step}"
        return (f"first non-finite at step {found.step} in the {found.tensor} of {found.layer}; stopped at step "
                f"{metrics.steps}")

    @check("bf16 autocast")
    def _(folder: Path) -> str:
        config, run = run_of("precision=bf16", "steps=100")
        metrics = train(run, folder, to_dict(config))
        assert metrics.status == "completed" and metrics.final.train_loss < 2.3, metrics.final
        return f"train loss {metrics.final.train_loss:.3f} after 100 steps"

    @check("fused optimizers follow torch's default update")
    def _(folder: Path) -> str:
        worst = 0.0
        for name, lr in (("sgd", 0.1), ("adam", 1e-3), ("adamw", 1e-3)):  # at adam's lr of 0.1 rounding grows
            config, run = run_of(f"optim={name}", f"lr={lr}", "steps=5")
            assert run.optimizer.defaults["fused"] is True, f"{name}: not fused"
            reference_model = build_run(config).model
            groups = param_groups(reference_model, run.lr, config.optim.weight_decay)
            options = {k: v for k, v in run.optimizer.defaults.items() if k in ("momentum", "nesterov", "betas")}
            reference = type(run.optimizer)(groups, lr=run.lr, **options)
            clamp_gates_after_each_step(reference, reference_model)
            x = torch.randn(64, *run.data.shape, device=DEVICE)
            y = torch.randint(0, run.data.n_classes, (64,), device=DEVICE)
            for model, optimizer in ((run.model, run.optimizer), (reference_model, reference)):
                for _ in range(5):
                    optimizer.zero_grad()
                    run.loss_fn(model(x), y).backward()
                    optimizer.step()
            for a, b in zip(run.model.parameters(), reference_model.parameters(), strict=True):
                worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item())
        assert worst < 1e-3, f"largest difference {worst:.2e} of a tensor's largest weight"
        return f"sgd, adam, adamw: largest weight difference after 5 steps {worst:.1e} of a tensor's largest weight"

    @check("an interrupted run resumes on the GPU and ends like an uninterrupted one")
    def _(folder: Path) -> str:
        config, run = run_of("steps=60", "log_every=5")
        whole = train(run, folder / "whole", to_dict(config))
        _, run = run_of("steps=60", "log_every=5")
        real_loss, calls = run.loss_fn, {"n": 0}

        def interrupted(logits, target):
            calls["n"] += 1
            if calls["n"] == 25:
                os.kill(os.getpid(), signal.SIGTERM)
            return real_loss(logits, target)

        run.loss_fn = interrupted
        first = train(run, folder / "split", to_dict(config))
        assert first.status == "interrupted", first.status
        _, again = run_of("steps=60", "log_every=5")
        second = train(again, folder / "split", to_dict(config), resume=load_checkpoint(folder / "split"))
        gap = abs(second.final.train_loss - whole.final.train_loss)
        assert second.status == "completed" and gap < 0.05, f"train loss {second.final.train_loss} vs {whole.final}"
        return f"interrupted at step {first.steps}, resumed to {second.steps}; final train loss differs by {gap:.1e}"

    print("\nbenchmark: the trainer against a plain DataLoader loop on the GPU", flush=True)
    rounds = os.environ.get("DIAGNOSE_CHECK_ROUNDS", "3")  # 0: checks only
    benchmark = subprocess.CompletedProcess([], 0)
    if rounds != "0":
        benchmark = subprocess.run([sys.executable, str(Path(__file__).parent / "vs_plain_loop.py"), "--device",
                                    DEVICE, "--rounds", rounds, "--models", "cnn", "mlp", "--data", "synthetic"],
                                   text=True)
    # several tiny jobs share the GPU under the local launcher (goal: >= 5x the one-at-a-time sweep's throughput)
    print("\nbenchmark: a 20-job sweep of tiny nets, one at a time against side by side on the GPU", flush=True)
    sweep = subprocess.CompletedProcess([], 0)
    if rounds != "0":
        sweep = subprocess.run([sys.executable, str(Path(__file__).parent / "sweep.py"), "--device", DEVICE,
                                "--seeds", "2", "--rounds", "1"], text=True)
    print(f"\n{sum(p for _, p, _ in VERDICTS)} of {len(VERDICTS)} checks passed; benchmark exit "
          f"{benchmark.returncode}, sweep benchmark exit {sweep.returncode}")
    for name, passed, said in VERDICTS:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {said.splitlines()[0]}")
    sys.exit(0 if all(p for _, p, _ in VERDICTS) and benchmark.returncode == sweep.returncode == 0 else 1)


if __name__ == "__main__":
    main()
