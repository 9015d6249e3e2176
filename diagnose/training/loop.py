"""The training loop: one function that reads top to bottom."""

import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import Run
from diagnose.components.norms import clamp_rho_
from diagnose.data import augment, shuffled_batches, to_input
from diagnose.training.console import console, progress_bar, stats_text
from diagnose.training.evaluate import evaluate
from diagnose.training.outputs import save_checkpoint, write_metrics


def train(run: Run, out_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Train `run` and write TensorBoard events, metrics.json and a checkpoint into `out_dir`.

    Returns the metrics; their `status` is completed, diverged (a non-finite loss) or interrupted (Ctrl-C).
    """
    model, data, device = run.model, run.data, run.device
    prepare = partial(to_input, mean=data.mean, std=data.std, center=run.center)
    generator = torch.Generator(device=device).manual_seed(run.seed)  # batch order and augmentation
    autocast = (torch.autocast(device.type, dtype=run.autocast_dtype) if run.autocast_dtype
                else nullcontext())
    writer = SummaryWriter(log_dir=str(out_dir))
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))  # indented: markdown shows it verbatim

    # running sums stay on the device; they are read (one host sync) only on logging steps
    window_loss = torch.zeros((), device=device)
    window_correct = torch.zeros((), device=device, dtype=torch.long)
    window_start, window_steps = time.perf_counter(), 0
    train_loss = train_acc = float("nan")
    history: list[dict[str, float]] = []
    status, done, train_time, images_per_s = "completed", 0, 0.0, 0.0  # done: completed steps
    started = time.perf_counter()

    model.train()
    progress = progress_bar()
    task = progress.add_task("train", total=run.total_steps, stats="")
    try:
        with progress:
            for step in range(run.total_steps):
                if step % run.steps_per_epoch == 0:
                    batches = shuffled_batches(len(data.train_y), run.batch, generator, device)
                idx = next(batches)
                xb, yb = data.train_x[idx], data.train_y[idx]  # (B, C, H, W) uint8, (B,)
                if run.augment:
                    xb = augment(xb, generator)
                with autocast:
                    logits = model(prepare(xb))
                    loss = run.loss_fn(logits.float(), yb)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if run.clip is not None:
                    run.clip([p for p in model.parameters() if p.grad is not None])
                run.optimizer.step()
                run.scheduler.step()
                clamp_rho_(model)
                window_loss += loss.detach()
                window_correct += (logits.argmax(dim=1) == yb).sum()
                window_steps += 1

                done = step + 1
                if done % run.log_every == 0 or done == run.total_steps:
                    # the only host sync of the hot loop, once per log window
                    train_loss = window_loss.item() / window_steps
                    train_acc = window_correct.item() / (window_steps * run.batch)
                    elapsed = time.perf_counter() - window_start
                    train_time += elapsed
                    images_per_s = window_steps * run.batch / elapsed
                    writer.add_scalar("train/loss", train_loss, done)
                    writer.add_scalar("train/acc", train_acc, done)
                    writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], done)
                    writer.add_scalar("perf/images_per_s", images_per_s, done)
                    progress.update(task, completed=done, stats=stats_text(train_loss, train_acc, images_per_s))
                    if not math.isfinite(train_loss):
                        status = "diverged"
                        console.print(f"[red]Training loss became {train_loss} by step {done}: stopping "
                                      f"(lower lr, add clipping or normalisation).")
                        break
                    window_loss.zero_()
                    window_correct.zero_()
                    window_start, window_steps = time.perf_counter(), 0

                if done % run.steps_per_epoch == 0 or done == run.total_steps:
                    val_loss, val_acc = evaluate(model, run.loss_fn, data.val_x, data.val_y, prepare)
                    writer.add_scalar("val/loss", val_loss, done)
                    writer.add_scalar("val/acc", val_acc, done)
                    history.append({"step": done, "epoch": done / run.steps_per_epoch,
                                    "val_loss": val_loss, "val_acc": val_acc})
                    window_start = time.perf_counter()  # evaluation time is not training time
    except KeyboardInterrupt:
        status = "interrupted"
        console.print(f"[yellow]Interrupted after {done} steps: saving what there is.")

    final: dict[str, float] = {"train_loss": train_loss, "train_acc": train_acc}
    if history:
        final.update(val_loss=history[-1]["val_loss"], val_acc=history[-1]["val_acc"])
    if status == "completed":
        final["test_loss"], final["test_acc"] = evaluate(model, run.loss_fn, data.test_x, data.test_y, prepare)
        writer.add_scalar("test/loss", final["test_loss"], run.total_steps)
        writer.add_scalar("test/acc", final["test_acc"], run.total_steps)
    metrics = {
        "status": status,
        "steps": done,
        "epochs": done / run.steps_per_epoch,
        "wall_time_s": time.perf_counter() - started,
        "images_per_s": done * run.batch / train_time if train_time else 0.0,
        "final": final,
        "history": history,
        "config": config,
    }
    writer.close()
    save_checkpoint(out_dir, {
        "model": model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": done,
        "config": config,
    })
    write_metrics(out_dir, metrics)
    return metrics
