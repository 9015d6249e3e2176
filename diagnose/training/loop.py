"""The training loop: one function that reads top to bottom."""

import time
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from diagnose.build import Run
from diagnose.console import RunProgress, say
from diagnose.diagnostics.dashboard import Measured, custom_scalars_layout
from diagnose.diagnostics.instruments import Sources, Span, for_training
from diagnose.diagnostics.monitor import Monitor
from diagnose.diagnostics.watch import Watch
from diagnose.ending import end_run
from diagnose.errors import UserError
from diagnose.files import quiet_write_errors_in_threads, write_error, write_metrics
from diagnose.results import Evaluation, Final, NonFinite, RunMetrics
from diagnose.sizes import check_noise_batch
from diagnose.training.batches import batch_indices, noise_batches, training_batch
from diagnose.training.divergence import LastGood
from diagnose.training.evaluate import evaluate
from diagnose.training.nonfinite import NonFiniteLoss
from diagnose.training.outputs import save_checkpoint
from diagnose.training.state import capture, restore
from diagnose.training.stop import StopRequests
from diagnose.training.window import LogWindow


@dataclass
class Record:
    """What a run accumulates besides its weights. Checkpoints carry it, so a resumed run ends with exactly
    the numbers of an uninterrupted one."""

    window_losses: list[float] = field(default_factory=list)  # the current log window's steps so far
    window_correct: int = 0
    train_loss: float = float("nan")
    train_acc: float = float("nan")
    train_time: float = 0.0  # seconds spent in training steps (evaluations excluded)
    wall_time: float = 0.0  # seconds since training began, over every process of the run, at its last checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)  # one Evaluation per evaluation
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train_loss) at each log window
    threads: list[list[int]] = field(default_factory=list)  # [first step, CPU threads] at each change
    diagnostics: dict[str, Any] = field(default_factory=dict)  # Monitor.state()

    @classmethod
    def of(cls, checkpoint: dict[str, Any] | None) -> "Record":
        saved = dict((checkpoint or {}).get("record", {}))
        if "dead_history" in saved:  # a checkpoint from before the instruments kept their own state
            saved["diagnostics"] = {**saved.get("diagnostics", {}),
                                    "DeadUnits": {**saved.get("diagnostics", {}), "history": saved.pop("dead_history")}}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


def train(run: Run, out_dir: Path, config: dict[str, Any], resume: dict[str, Any] | None = None,
          stop: StopRequests | None = None) -> RunMetrics:
    """Train `run`, writing TensorBoard events, metrics.json and a checkpoint into `out_dir`; with `resume`
    (a checkpoint), go on from where it stopped, in the same folder. The metrics' `status` is completed,
    diverged (a NaN/Inf appeared) or interrupted (Ctrl-C, SIGTERM, caught by `stop`, which the caller may have
    installed before building the run)."""
    if stop is None:
        with StopRequests() as stop:
            return train(run, out_dir, config, resume, stop)
    generator = torch.Generator(device=run.device).manual_seed(run.seed)  # augmentation
    start = restore(run, generator, resume) if resume else 0
    record = Record.of(resume)
    writer = open_writer(out_dir, config, start if resume else None, run)
    step_batch: list[tuple[torch.Tensor, torch.Tensor]] = []  # the batch of the step under way, for the landscape
    watch = Watch(run.model, run.optimizer, monitor_for(run, writer, step_batch), step=start, clip=run.clip)
    watch.monitor.load_state(record.diagnostics)
    window = LogWindow(run.log_every, run.device, record.window_losses, record.window_correct)
    last_good, losses_watch = LastGood(run, generator, start, watch), NonFiniteLoss(run.device)
    status, done, nonfinite, between_steps = "completed", start, None, True
    started = time.perf_counter() - record.wall_time  # a resumed run's clock goes on from its checkpoint
    saved = {"step": start if resume else None}  # the step of the last checkpoint in out_dir, None before the first

    def checkpoint(step: int) -> None:
        """Save the state after `step` steps with everything the record needs to go on exactly."""
        record.window_losses, record.window_correct = window.state()
        record.diagnostics = watch.monitor.state()
        record.wall_time = time.perf_counter() - started
        save_checkpoint(out_dir, {**capture(run, generator, step), "config": config, "record": asdict(record)})
        saved["step"] = step

    run.model.train()
    with RunProgress(run.total_steps, start, run.steps_per_epoch) as progress:
        try:
            for step, idx in zip(range(start + 1, run.total_steps + 1), batch_indices(run, start), strict=False):
                if stop.requested:
                    status = "interrupted"
                    say(f"{stop.requested}: stopping after {done} steps, saving everything.", "yellow")
                    break
                x, y = training_batch(run, idx, generator)
                step_batch[:] = [(x, y)]
                if run.threads is not None:  # on the CPU: threads=auto times a few steps every few seconds
                    run.threads.before_step(step, record.threads)
                loss, correct = train_step(run, x, y)  # the watch measures what is due on the way
                nonfinite = watch.nonfinite
                window.add(loss, correct)
                done = step
                blew_up = losses_watch.check(loss, step) is not None
                progress.step(step)

                if window.full or step == run.total_steps or nonfinite or blew_up:
                    losses, correct_total, seconds = window.read()  # the only host sync of the hot loop
                    nonfinite = last_good.first_nonfinite(losses, step, nonfinite, partial(train_step, run))
                    if nonfinite:
                        status = "diverged"
                        say(f"Diverged: {nonfinite.describe()}. Stopping.", "red")
                        break
                    log_window(run, writer, record, losses, correct_total, seconds, step)
                    progress.window(step, record.train_loss, record.train_acc, len(losses) * run.batch / seconds)
                    last_good.update(step)

                if step % run.steps_per_epoch == 0 or step == run.total_steps:
                    evaluation_started = time.perf_counter()
                    if len(run.data.val_y):
                        evaluation = evaluate_epoch(run, watch, writer, step)
                        progress.evaluation(step, evaluation.val_loss, evaluation.val_acc)
                        record.history.append(asdict(evaluation))
                    if step < run.total_steps:
                        checkpoint(step)  # a process killed outright can still resume from the last epoch
                    window.pause(time.perf_counter() - evaluation_started)  # evaluation time is not training time
        except KeyboardInterrupt:  # a second Ctrl-C, in the middle of a step: the last checkpoint stays
            status, between_steps = "interrupted", False
            last = (f"the last checkpoint is from step {saved['step']}" if saved["step"] is not None else
                    "there is no checkpoint yet (the first is saved at the first epoch's end), so it cannot be resumed")
            say(f"Interrupted in the middle of step {done + 1}; metrics are saved, and {last}.", "yellow")
        except Exception as err:  # the disk, or a bug: record what the run has, then the error goes on up
            failure = write_error(err, out_dir) if isinstance(err, OSError) else err
            metrics = run_metrics(run, record, "failed", done, nonfinite, config)
            metrics.error = f"{type(err).__name__}: {err}"
            metrics.error_kind = "user" if isinstance(failure, UserError) else "internal"
            # the disk may take nothing more (the events' writer may be what found it full): each is tried alone,
            # and the last checkpoint stays readable
            with suppress(Exception):
                writer.close()
            with suppress(Exception):
                write_metrics(out_dir, metrics)
            raise failure from err
        finally:
            watch.detach()

    saved_step = done
    if nonfinite is not None:
        restored = last_good.restore()  # the checkpoint keeps the last finite weights, not the ones that blew up
        saved_step = done if restored is None else restored
    if between_steps:  # a step cut in half is not saved
        checkpoint(saved_step)  # the trained state first: whatever happens after, resume= goes on from here
    metrics = run_metrics(run, record, status, done, nonfinite, config)
    return after_training(run, out_dir, metrics, watch, writer, stop, started)


def monitor_for(run: Run, writer: SummaryWriter, step_batch: list[tuple[torch.Tensor, torch.Tensor]]) -> Monitor:
    """What `run.diag` asks for, on the run's model and optimizer; the batches the instruments run the model on
    are the run's: dead units on held-out examples, the noise scale on training examples drawn by step, the
    curvature on the first training examples, the landscape on the step's own batch (`step_batch`)."""
    diag, data = run.diag, run.data
    if diag.noise_every:  # refused before a batch of that size is drawn, with a size that would fit
        check_noise_batch(run.model, data.shape, diag.noise_batch, diag.noise_micro, run.device)

    def bn_accuracy() -> float:  # BN needs 2 examples
        return evaluate(run.model, run.loss_fn, data.val_x, data.val_y, run.prepare, batch=max(run.batch, 2),
                        batch_stats=True)[1]

    sources = Sources(loss_fn=run.loss_fn, probe=run.prepare(data.val_x[:diag.probe_size]),
                      noise=partial(noise_batches, run), landscape=lambda step: step_batch[0],
                      curvature=(run.prepare(data.train_x[:diag.curvature_batch]), data.train_y[:diag.curvature_batch]),
                      bn_accuracy=bn_accuracy if len(data.val_y) else None)
    if diag.probe_every and not len(data.val_y):
        say("data.val_size=0: no held-out examples for the dead-unit probe, so dead ReLUs are not measured (and "
            "there is no validation).", "yellow")
    one_evaluation = run.steps_per_epoch >= run.total_steps  # at the end: a snapshot in the middle too
    span = Span(last=run.total_steps, batch=run.batch, seed=run.seed,
                middle=run.total_steps // 2 if one_evaluation and run.total_steps > 2 else None)
    return for_training(run.model, run.optimizer, run.layers, diag, sources, span,
                        writer)


def after_training(run: Run, out_dir: Path, metrics: RunMetrics, watch: Watch, writer: SummaryWriter,
                   stop: StopRequests, started: float) -> RunMetrics:
    """The test pass, the instruments' results, the findings and metrics.json, once the trained state is saved.
    A signal stops a completed run's here at once (status interrupted: resume= runs this again); an error leaves
    metrics.json with status failed and the error, and goes on up."""
    try:
        with stop.at_once() if metrics.status == "completed" else nullcontext():
            if metrics.status == "completed":
                evaluate_test(run, writer, metrics.final, metrics.steps)
            if metrics.nonfinite is not None:
                writer.add_text("diverged", metrics.nonfinite.describe(), metrics.nonfinite.step)
            watch.monitor.finish(metrics)
            metrics.wall_time_s = time.perf_counter() - started
            return end_run(out_dir, metrics, run.findings, writer)
    except KeyboardInterrupt:
        metrics.status, metrics.wall_time_s = "interrupted", time.perf_counter() - started
        say(f"{stop.requested or 'SIGINT'}: stopped after training, before its results were written; resume= "
            f"writes them.", "yellow")
        writer.close()
        write_metrics(out_dir, metrics)
        return metrics
    except Exception as err:
        failure = write_error(err, out_dir) if isinstance(err, OSError) else err
        metrics.status, metrics.error = "failed", f"{type(err).__name__}: {err}"
        metrics.error_kind = "user" if isinstance(failure, UserError) else "internal"
        with suppress(Exception):  # the error itself may be the disk: the checkpoint is saved already
            writer.close()
            write_metrics(out_dir, metrics)
        raise failure from err


def run_metrics(run: Run, record: Record, status: str, done: int, nonfinite: NonFinite | None,
                config: dict[str, Any]) -> RunMetrics:
    """The run's metrics from its record; the test split and the instruments' contributions come after."""
    history = [Evaluation(**entry) for entry in record.history]
    final = Final(train_loss=record.train_loss, train_acc=record.train_acc)
    if history:
        final.val_loss, final.val_acc = history[-1].val_loss, history[-1].val_acc
    return RunMetrics(status=status, steps=done, epochs=done / run.steps_per_epoch, final=final, history=history,
                      train_curve=[(step, loss) for step, loss in record.train_curve],
                      images_per_s=done * run.batch / record.train_time if record.train_time else 0.0,
                      lr=run.lr, classes=run.data.n_classes, nonfinite=nonfinite, config=config,
                      threads=[[first, threads] for first, threads in record.threads])


def evaluate_test(run: Run, writer: SummaryWriter, final: Final, step: int) -> None:
    final.test_loss, final.test_acc = evaluate(run.model, run.loss_fn, run.data.test_x, run.data.test_y, run.prepare)
    writer.add_scalar("test/loss", final.test_loss, step)
    writer.add_scalar("test/acc", final.test_acc, step)


def open_writer(out_dir: Path, config: dict[str, Any], resume_step: int | None, run: Run) -> SummaryWriter:
    """The run's TensorBoard writer; a new run's starts with its config and the dashboard layout of its layers."""
    quiet_write_errors_in_threads()
    # purge_step: TensorBoard drops what an interrupted process logged after its last checkpoint
    writer = SummaryWriter(log_dir=str(out_dir), purge_step=None if resume_step is None else resume_step + 1)
    if resume_step is None:
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(config))
        writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))  # indented: shown verbatim
        layers = run.layers
        writer.add_custom_scalars(custom_scalars_layout(layers, Measured.of(run.diag, len(run.data.val_y) > 0)))
    return writer


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One optimizer step on the batch (x, y); returns (loss, number correct) as device tensors. The watch on the
    optimizer measures what is due and clips the gradients (clip=) on the way."""
    autocast = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else nullcontext()
    with autocast:
        logits = run.model(x)
        loss = run.loss_fn(logits.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss.detach(), (logits.argmax(dim=1) == y).sum()


def log_window(run: Run, writer: SummaryWriter, record: Record, losses: list[float], correct: float, seconds: float,
               step: int) -> None:
    """The window's means: an event per step would cost ~50 us of the writer's thread each, 5 % of a small model's
    step, for a curve TensorBoard smooths anyway (log_every=1 gives it, at the price of a host sync every step)."""
    record.train_time += seconds
    record.train_loss = sum(losses) / len(losses)
    record.train_acc = correct / (len(losses) * run.batch)
    record.train_curve.append((step, record.train_loss))
    writer.add_scalar("train/loss", record.train_loss, step)
    writer.add_scalar("train/acc", record.train_acc, step)
    writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], step)
    writer.add_scalar("perf/images_per_s", len(losses) * run.batch / seconds, step)
    if run.threads is not None:  # beside the throughput: where threads=auto switched, and what it gained
        writer.add_scalar("perf/threads", run.threads.current, step)


def evaluate_epoch(run: Run, watch: Watch, writer: SummaryWriter, step: int) -> Evaluation:
    """Validation loss and accuracy, and what the instruments measure at an evaluation."""
    val_loss, val_acc = evaluate(run.model, run.loss_fn, run.data.val_x, run.data.val_y, run.prepare)
    writer.add_scalar("val/loss", val_loss, step)
    writer.add_scalar("val/acc", val_acc, step)
    evaluation = Evaluation(step, step / run.steps_per_epoch, val_loss, val_acc)
    watch.on_evaluation(evaluation)
    return evaluation
