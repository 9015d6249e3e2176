"""The training loop: one function that reads top to bottom."""

import gc
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import Run
from diagnose.components.norms import BATCH
from diagnose.config import DiagConfig
from diagnose.console import console, print_findings, progress_bar, stats_text
from diagnose.data import augment, shuffled_batches, to_input
from diagnose.diagnostics.dashboard import custom_scalars_layout, depth_figure
from diagnose.diagnostics.landscape import landscape
from diagnose.diagnostics.monitor import Diagnostics, NonFinite
from diagnose.diagnostics.probes import DeadUnitProbe
from diagnose.diagnostics.stats import units_identical
from diagnose.diagnostics.writing import write_scalars
from diagnose.findings import as_dicts, as_markdown, run_findings
from diagnose.training.evaluate import evaluate
from diagnose.training.outputs import save_checkpoint, write_metrics
from diagnose.training.state import capture, epoch_generator, restore
from diagnose.training.stop import StopRequests
from diagnose.training.watch import NonFiniteLoss

# The state a divergence is replayed from is saved every this many log windows (checked finite at each):
# a copy costs little, but on a tiny, fast model every window would be a few percent of the run.
SNAPSHOT_WINDOWS = 4


@dataclass
class Record:
    """What a run accumulates besides its weights. Checkpoints carry it, so a resumed run ends with exactly
    the numbers of an uninterrupted one."""

    window_losses: list[float] = field(default_factory=list)  # the current log window's steps so far
    window_correct: int = 0
    train_loss: float = float("nan")
    train_acc: float = float("nan")
    train_time: float = 0.0  # seconds spent in training steps (evaluations excluded)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation
    dead_history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # layer -> (step, dead)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # Diagnostics.state() and the probe's masks


def train(run: Run, out_dir: Path, config: dict[str, Any], resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `run`, writing TensorBoard events, metrics.json and a checkpoint into `out_dir`; with `resume`
    (a checkpoint), go on from where it stopped, in the same folder.

    Returns the metrics; their `status` is completed, diverged (a NaN/Inf appeared) or interrupted (Ctrl-C,
    SIGTERM).
    """
    settings = run.diag
    model, data, device = run.model, run.data, run.device
    prepare = partial(to_input, mean=data.mean, std=data.std, center=run.center)
    generator = torch.Generator(device=device).manual_seed(run.seed)  # augmentation
    start = restore(run, generator, resume) if resume else 0
    record = Record(**resume["record"]) if resume else Record()
    # purge_step: TensorBoard drops what an interrupted process logged after its last checkpoint
    writer = SummaryWriter(log_dir=str(out_dir), purge_step=start + 1 if resume else None)
    if not resume:
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(config))
        writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))  # indented: shown verbatim
        writer.add_custom_scalars(custom_scalars_layout())
    diag = Diagnostics(model, writer, settings, run.act, run.norm)
    probe_x = prepare(data.val_x[:settings.probe_size])  # held out from training, fixed for the whole run
    probe = None
    if settings.probe_every and len(probe_x):
        probe = DeadUnitProbe(model, diag.layers, probe_x, settings.dead_since, chunk=max(run.batch, 128))
    elif settings.probe_every:
        console.print("[yellow]data.val_size=0: no held-out examples for the dead-unit probe, so dead ReLUs are not "
                      "measured (and there is no validation).")
    if resume:
        diag.load_state(record.diagnostics)
        if probe is not None:
            probe.always_dead = {k: v.to(device) for k, v in record.diagnostics.get("always_dead", {}).items()}
    step_fn = partial(train_step, run, generator, prepare, diag, list(model.parameters()))

    # Per-step losses of the current log window stay on the device: reading them (one host sync) happens
    # only on logging steps, or as soon as `watch` has seen a NaN/Inf loss, and tells exactly which step
    # first went non-finite.
    window_losses = torch.zeros(run.log_every, device=device)
    window_losses[:len(record.window_losses)] = torch.tensor(record.window_losses, device=device)
    window_correct = torch.tensor(float(record.window_correct), device=device)
    window_start, window_steps = time.perf_counter(), len(record.window_losses)
    last_good = capture(run, generator, start) if settings.locate_nonfinite else None
    watch = NonFiniteLoss(device)
    status, done, nonfinite = "completed", start, None
    between_steps = True  # False when a second Ctrl-C cut a step in half: that state is not saved
    started = time.perf_counter()

    def checkpoint(step: int) -> None:
        """Save the state after `step` steps with everything the record needs to go on exactly."""
        record.window_losses = window_losses[:window_steps].tolist()
        record.window_correct = int(window_correct.item())
        record.diagnostics = {**diag.state(), "always_dead": probe.always_dead if probe else {}}
        save_checkpoint(out_dir, {**capture(run, generator, step), "config": config, "record": asdict(record)})

    model.train()
    progress = progress_bar()
    task = progress.add_task("train", total=run.total_steps, completed=start, stats="")
    with progress, StopRequests() as stop:
        try:
            for step in range(start, run.total_steps):
                if stop.requested:
                    status = "interrupted"
                    console.print(f"[yellow]{stop.requested}: stopping after {done} steps, saving everything.")
                    break
                if step == start or step % run.steps_per_epoch == 0:
                    batches = batches_from(run, step)
                idx = next(batches)
                if settings.landscape and (step + 1) % settings.landscape_every == 0:
                    write_scalars(writer, landscape(model, run.loss_fn, prepare(data.train_x[idx]), data.train_y[idx],
                                                    run.optimizer.param_groups[0]["lr"]), step + 1)
                diag.start(step + 1, last=step + 1 == run.total_steps)
                loss, correct = step_fn(idx)
                nonfinite = diag.finish(step + 1)
                loss_blew_up = watch.check(loss, step + 1) is not None
                window_losses[window_steps] = loss
                window_correct += correct
                window_steps += 1
                done = step + 1

                if probe is not None and (done % settings.probe_every == 0 or done == run.total_steps):
                    measured = write_scalars(writer, probe.measure(done), done)
                    diag.latest.update(measured)
                    for tag, value in measured.items():
                        if tag.startswith("dead/"):
                            record.dead_history.setdefault(tag[len("dead/"):], []).append((done, value))

                if window_steps == run.log_every or done == run.total_steps or nonfinite or loss_blew_up:
                    # the only host sync of the hot loop, once per log window (or at once when it diverged)
                    *losses, correct_total = torch.cat([window_losses[:window_steps], window_correct[None]]).tolist()
                    first_step = done - window_steps + 1
                    bad = next((first_step + i for i, v in enumerate(losses) if not math.isfinite(v)), None)
                    if bad is not None or nonfinite:
                        status = "diverged"
                        if bad is not None and not (nonfinite and nonfinite.step <= bad):
                            nonfinite = locate_nonfinite(run, generator, last_good, bad, diag, step_fn)
                        console.print(f"[red]Diverged: {nonfinite.describe()}. Stopping; lower the lr, clip "
                                      f"gradients or add normalisation.")
                        break
                    elapsed = time.perf_counter() - window_start
                    record.train_time += elapsed
                    images_per_s = window_steps * run.batch / elapsed
                    record.train_loss = sum(losses) / len(losses)
                    record.train_acc = correct_total / (window_steps * run.batch)
                    # means over the window: an event per step would cost ~50 us of the writer's thread each,
                    # 5 % of a small model's step, for a curve TensorBoard smooths anyway (log_every=1 gives
                    # it, at the price of a host sync every step and a state snapshot every few)
                    writer.add_scalar("train/loss", record.train_loss, done)
                    writer.add_scalar("train/acc", record.train_acc, done)
                    writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], done)
                    writer.add_scalar("perf/images_per_s", images_per_s, done)
                    progress.update(task, completed=done,
                                    stats=stats_text(record.train_loss, record.train_acc, images_per_s))
                    if last_good is not None and done % (SNAPSHOT_WINDOWS * run.log_every) == 0:
                        last_good = capture(run, generator, done)
                    window_correct.zero_()
                    window_start, window_steps = time.perf_counter(), 0

                if done % run.steps_per_epoch == 0 or done == run.total_steps:
                    eval_start = time.perf_counter()
                    if len(data.val_y):
                        record.history.append(evaluate_epoch(run, prepare, diag, settings, writer, done))
                    if done < run.total_steps:
                        checkpoint(done)  # a process killed outright can still resume from the last epoch
                    window_start += time.perf_counter() - eval_start  # evaluation time is not training time
        except KeyboardInterrupt:  # a second Ctrl-C, in the middle of a step: the last checkpoint stays
            status, between_steps = "interrupted", False
            console.print(f"[yellow]Interrupted in the middle of step {done + 1}; metrics are saved, and the "
                          f"last checkpoint is from an epoch end.")
        finally:
            diag.close()

    final: dict[str, float] = {"train_loss": record.train_loss, "train_acc": record.train_acc}
    if record.history:
        final.update(val_loss=record.history[-1]["val_loss"], val_acc=record.history[-1]["val_acc"])
    if status == "completed":
        final["test_loss"], final["test_acc"] = evaluate(model, run.loss_fn, data.test_x, data.test_y, prepare)
        writer.add_scalar("test/loss", final["test_loss"], done)
        writer.add_scalar("test/acc", final["test_acc"], done)
    saved_step = done
    if nonfinite is not None:
        writer.add_text("diverged", nonfinite.describe(), nonfinite.step)
        if last_good:  # the checkpoint keeps the last finite weights, not the ones that blew up
            saved_step = restore(run, generator, last_good)
            window_steps = 0
    metrics = {
        "status": status,
        "steps": done,
        "epochs": done / run.steps_per_epoch,
        "wall_time_s": time.perf_counter() - started,
        "images_per_s": done * run.batch / record.train_time if record.train_time else 0.0,
        "final": final,
        "history": record.history,
        "nonfinite": vars(nonfinite) if nonfinite else None,
        "layers": diag.by_layer(),
        "dead_history": record.dead_history,
        "run_means": diag.run_means(),
        "symmetric_layers": [name for name, weight in diag.weights if units_identical(weight)],
        "config": config,
    }
    findings = run_findings(metrics, run.findings)
    metrics["findings"] = as_dicts(findings)
    if findings:
        writer.add_text("findings", as_markdown(findings), done)
        print_findings(findings)
    writer.close()
    if between_steps:
        checkpoint(saved_step)
    write_metrics(out_dir, metrics)
    return metrics


def epoch_batches(run: Run, epoch: int) -> Iterator[torch.Tensor]:
    """The index tensors of one epoch's batches, in an order fixed by (seed, epoch)."""
    generator = epoch_generator(run.seed, epoch, run.device)
    return shuffled_batches(len(run.data.train_y), run.batch, generator, run.device)


def batches_from(run: Run, step: int) -> Iterator[torch.Tensor]:
    """The batches of `step`'s epoch, from `step` on: replaying or resuming sees the very same batches."""
    epoch, position = divmod(step, run.steps_per_epoch)
    return itertools.islice(epoch_batches(run, epoch), position, None)


def train_step(run: Run, generator: torch.Generator, prepare: Callable, diag: Diagnostics,
               params: list[torch.nn.Parameter], idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the examples `idx`; returns (loss, number correct) as device tensors."""
    xb, yb = run.data.train_x[idx], run.data.train_y[idx]  # (B, C, H, W) uint8, (B,)
    if run.augment:
        xb = augment(xb, generator)
    autocast = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else nullcontext()
    with autocast:
        logits = run.model(prepare(xb))
        loss = run.loss_fn(logits.float(), yb)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    diag.after_backward()
    if run.clip is not None:
        run.clip(params)  # both clips skip parameters without a gradient
    run.optimizer.step()
    run.scheduler.step()
    return loss.detach(), (logits.argmax(dim=1) == yb).sum()


def locate_nonfinite(run: Run, generator: torch.Generator, last_good: dict[str, Any] | None, bad_step: int,
                     diag: Diagnostics, step_fn: Callable) -> NonFinite:
    """Replay from the last state known to be finite, measuring every layer at every step, to name the
    first layer and step where a NaN/Inf appears. Without a saved state, only the step is known."""
    if last_good is None:
        return NonFinite(bad_step, "loss", "loss")
    start = restore(run, generator, last_good)
    for step in range(start, bad_step):
        if step == start or step % run.steps_per_epoch == 0:
            batches = batches_from(run, step)
        diag.start(step + 1, watch=True)
        loss, _ = step_fn(next(batches))
        found = diag.finish(step + 1, write=False)
        if found:
            return found
        if not torch.isfinite(loss):
            return NonFinite(step + 1, "loss", "loss")
    return NonFinite(bad_step, "loss", "loss")


def evaluate_epoch(run: Run, prepare: Callable, diag: Diagnostics, settings: DiagConfig, writer: SummaryWriter,
                   done: int) -> dict[str, float]:
    """Validation loss/accuracy, BN's train-vs-eval accuracy and the depth plot; returns the history entry."""
    data = run.data
    if diag.latest:
        writer.add_figure("depth/act_std_and_grad_norm", depth_figure(diag.latest, diag.layer_names, done), done)
        # A figure and its canvas reference each other, and the cycle holds the rendered image: only the
        # cyclic collector frees it, which a tensor-heavy loop seldom triggers (measured: ~4 MB more RSS per
        # evaluation without this, flat with it).
        gc.collect()
    val_loss, val_acc = evaluate(run.model, run.loss_fn, data.val_x, data.val_y, prepare)
    writer.add_scalar("val/loss", val_loss, done)
    writer.add_scalar("val/acc", val_acc, done)
    entry = {"step": done, "epoch": done / run.steps_per_epoch, "val_loss": val_loss, "val_acc": val_acc}
    if settings.bn_eval_gap and run.norm.kind == BATCH:
        _, train_mode_acc = evaluate(run.model, run.loss_fn, data.val_x, data.val_y, prepare,
                                     batch=max(run.batch, 2), batch_stats=True)  # BN needs 2 examples
        writer.add_scalar("bn/val_acc_train_mode", train_mode_acc, done)
        writer.add_scalar("bn/val_acc_eval_mode", val_acc, done)
        entry["val_acc_bn_train_mode"] = train_mode_acc
    return entry
