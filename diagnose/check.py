"""`diagnose check`: the sanity checks an experienced practitioner runs before training (Karpathy, "A Recipe for
Training Neural Networks"), on the same config, components and data as `train`, in well under a minute.

Each check starts from the network's initial weights and leaves them as they were; each says what it measured,
what a healthy setup gives, its verdict and, when it fails, the remedy. Verdicts: pass, fail (the command exits
non-zero), or note (something to know that is not an error, e.g. BatchNorm coupling the examples, or
un-centred inputs).
"""

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from diagnose.build import Run, build_run
from diagnose.components.norms import BATCH
from diagnose.components.optim import make_optimizer
from diagnose.components.targets import is_target
from diagnose.config import CheckConfig, CheckSettings, to_dict
from diagnose.console import console, say
from diagnose.diagnostics.writing import write_png
from diagnose.files import replace_atomically
from diagnose.models.modes import batch_statistics

RESULT_FILE = "check.json"
LR_FIGURE = "lr_range.png"
FALL = 0.1  # the range test's loss must fall by this fraction somewhere: less is noise, not training


@dataclass
class Check:
    name: str
    measured: str
    expected: str
    verdict: str  # pass, fail or note
    remedy: str = ""
    value: float | None = None  # the measured number the verdict rests on


@dataclass
class Subject:
    """What is checked: the built run, its config, and the network's initial weights every check starts from."""

    run: Run
    config: CheckConfig
    state: dict

    @property
    def settings(self) -> CheckSettings:
        return self.config.check

    def fresh(self, lr: float | None = None) -> torch.optim.Optimizer:
        """The model back at its initial weights in train mode, and a new optimizer of the configured kind."""
        self.run.model.load_state_dict(self.state)
        self.run.model.train()
        return make_optimizer(self.config.optim, self.run.model, self.run.lr if lr is None else lr, None)


def step_on(run: Run, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step on (x, y); the loss before it."""
    loss = run.loss_fn(run.model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """As training sees the examples, without dropout's random zeros: BN on the batch's statistics."""
    with torch.no_grad(), batch_statistics(model):
        return (model(x).argmax(dim=1) == y).float().mean().item()


def loss_at_init(subject: Subject) -> Check:
    """The loss of the untrained network against that of a network whose outputs are all equal: the value a
    well-scaled last layer starts near (ln C for cross-entropy; derived for every loss by evaluating it at equal
    logits, so class weights, smoothing and margins are accounted for)."""
    subject.fresh()
    run, settings = subject.run, subject.settings
    x, y = run.prepare(run.data.train_x[:settings.examples]), run.data.train_y[:settings.examples]
    with torch.no_grad(), batch_statistics(run.model):  # dropout off: its zeros would scale the outputs
        logits = run.model(x)
        measured = run.loss_fn(logits, y).item()
        expected = run.loss_fn(torch.zeros_like(logits), y).item()
    off = abs(measured - expected) / max(abs(expected), 1e-12)
    verdict = "pass" if off <= settings.init_loss_tolerance else "fail"
    return Check("loss at initialisation", f"{measured:.4g}", f"{expected:.4g} (equal outputs) ± "
                 f"{settings.init_loss_tolerance:.0%}", verdict,
                 "" if verdict == "pass" else "the last layer's outputs are far from equal at init: scale the head "
                 "down (a smaller init.std, or the init's gain) or check the loss gets logits, not probabilities",
                 measured)


def overfit_one_batch(subject: Subject) -> Check:
    """Train on one small batch alone: any network that can learn fits it completely within a few hundred steps."""
    optimizer, run, settings = subject.fresh(), subject.run, subject.settings
    x = run.prepare(run.data.train_x[:settings.overfit_examples])
    y = run.data.train_y[:settings.overfit_examples]
    reached, steps = 0.0, 0
    for steps in range(1, settings.overfit_steps + 1):
        step_on(run, optimizer, x, y)
        if steps % 10 == 0 or steps == settings.overfit_steps:
            reached = accuracy(run.model, x, y)
            if reached >= settings.overfit_accuracy:
                break
    passed = reached >= settings.overfit_accuracy
    return Check(f"overfit {len(y)} examples", f"train accuracy {reached:.0%} after {steps} steps",
                 f">= {settings.overfit_accuracy:.0%} within {settings.overfit_steps} steps",
                 "pass" if passed else "fail",
                 "" if passed else "the model, loss and optimizer cannot learn even one batch: look for a zero or "
                 "symmetric init (init=zeros), an lr far off, saturated or dead units (diagnose probe), or a loss "
                 "wired to the wrong outputs", reached)


def gradient_leak(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    """Backpropagate example 0's loss alone: the largest gradient reaching the *other* examples' inputs, relative to
    the largest reaching its own. 0 exactly when nothing mixes the examples of a batch."""
    x = x.detach().clone().requires_grad_(True)
    loss_fn(model(x)[:1], y[:1]).backward()
    own, others = x.grad[0].abs().max().item(), x.grad[1:].abs().max().item()
    return others / own if own > 0 else math.inf if others > 0 else 0.0


def examples_independent(subject: Subject) -> Check:
    subject.fresh()
    run, settings = subject.run, subject.settings
    x, y = run.prepare(run.data.train_x[:8]), run.data.train_y[:8]
    run.model.train()
    leak = gradient_leak(run.model, run.loss_fn, x, y)
    run.model.eval()
    leak_eval = gradient_leak(run.model, run.loss_fn, x, y)
    run.model.train()
    batch_norms = [layer.name for layer in run.layers if layer.role == "norm" and layer.kind == BATCH]
    # in the user's terms: the norm=... keys pick the tool's own models' norms only
    names = (f"norm={subject.config.norm.name}" if not is_target(subject.config.model)
             else f"your model's {', '.join(batch_norms)}")
    remedy = "norm=gn or ln" if not is_target(subject.config.model) else "GroupNorm or LayerNorm in their place"
    measured = f"leak {leak:.2g} in train mode, {leak_eval:.2g} in eval mode"
    if leak <= settings.leak_tolerance:
        return Check("examples stay independent", measured, f"<= {settings.leak_tolerance:g}", "pass", value=leak)
    if batch_norms and leak_eval <= settings.leak_tolerance:
        return Check("examples stay independent", measured, f"<= {settings.leak_tolerance:g}", "note",
                     f"expected: {names} normalise{'s' if len(batch_norms) == 1 else ''} with the batch's statistics, "
                     f"so each example's output depends on the others in training (not in eval mode); a "
                     f"batch-independent norm ({remedy}) removes it", leak)
    return Check("examples stay independent", measured, f"<= {settings.leak_tolerance:g}", "fail",
                 "something mixes the examples of a batch: a reshape or view over the batch dimension, or a "
                 "reduction over it, in a custom layer", leak)


def input_statistics(subject: Subject) -> list[Check]:
    """The prepared inputs' per-channel mean and std, the label balance, and a shuffled-label baseline."""
    run, settings = subject.run, subject.settings
    x = run.prepare(run.data.train_x[:settings.examples]).float()
    channels = x.transpose(0, 1).flatten(1)
    means, stds = channels.mean(dim=1), channels.std(dim=1)
    centred = bool((means.abs() <= 0.1).all() and ((stds - 1).abs() <= 0.2).all())
    shown = ", ".join(f"{m:.2f}/{s:.2f}" for m, s in zip(means.tolist(), stds.tolist(), strict=True))
    found = [Check("inputs centred", f"mean/std per channel {shown}", "0/1 (data.center=true)",
                   "pass" if centred else "note",
                   "" if centred else "un-centred inputs: every weight of a first-layer unit gets a gradient of the "
                   "same sign, so updates zig-zag; data.center=true normalises them",
                   means.abs().max().item())]
    counts = torch.bincount(run.data.train_y, minlength=run.data.n_classes).float()
    missing = int((counts == 0).sum())
    ratio = (counts.max() / counts.min()).item() if not missing else math.inf
    balanced = ratio <= settings.imbalance
    found.append(Check("labels balanced", f"{missing} classes missing" if missing else
                       f"largest/smallest class {ratio:.2f}", f"<= {settings.imbalance:g}",
                       "fail" if missing else "pass" if balanced else "note",
                       "a class never appears in training: check the labels and the split (data.subset takes "
                       "the first examples)" if missing else "" if balanced else "unbalanced classes: accuracy "
                       "hides the small ones; weigh them (loss.weight) or resample", ratio))
    found.append(shuffled_labels(subject))
    return found


def shuffled_labels(subject: Subject) -> Check:
    """Train on shuffled labels: the validation accuracy (true labels) must stay at chance. Above it, the labels
    leak into the inputs or the split."""
    optimizer, run, settings = subject.fresh(), subject.run, subject.settings
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    n = len(run.data.train_y)
    shuffled = run.data.train_y[shuffle(n, generator, run.device)]
    for _ in range(settings.shuffled_steps):
        idx = torch.randint(n, (run.batch,), generator=generator, device=run.device)
        step_on(run, optimizer, run.prepare(run.data.train_x[idx]), shuffled[idx])
    run.model.eval()
    x, y = (run.data.val_x, run.data.val_y) if len(run.data.val_y) else (run.data.test_x, run.data.test_y)
    acc = accuracy(run.model, run.prepare(x[:settings.examples]), y[:settings.examples])  # true labels
    run.model.train()
    y = y[:settings.examples]
    share = torch.bincount(y, minlength=run.data.n_classes).max().item() / len(y)
    chance = max(1 / run.data.n_classes, share)  # always guessing the commonest class
    passed = acc <= chance + settings.shuffled_margin
    return Check("shuffled labels stay at chance", f"accuracy {acc:.1%} after {settings.shuffled_steps} steps",
                 f"<= chance {chance:.1%} + {settings.shuffled_margin:.0%}", "pass" if passed else "fail",
                 "" if passed else "the network learns real labels from shuffled ones: labels leak into the "
                 "inputs (or the validation split overlaps the training one)", acc)


def shuffle(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=device)


def lr_range(subject: Subject, out_dir: Path) -> Check:
    """Smith (2017): an exponential lr sweep from a fresh init, the loss smoothed; the suggestion is the lr where it
    falls fastest (as Lightning's finder), in the config's terms (`lr` at optim.base_batch)."""
    run, settings = subject.run, subject.settings
    low, high, steps = settings.lr_min, settings.lr_max, settings.lr_range_steps
    optimizer = subject.fresh(low)
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    n, lrs, losses, smooth = len(run.data.train_y), [], [], None
    for step in range(steps):
        lr = low * (high / low) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(n, (run.batch,), generator=generator, device=run.device)
        loss = step_on(run, optimizer, run.prepare(run.data.train_x[idx]), run.data.train_y[idx]).item()
        smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
        if not math.isfinite(loss) or (losses and smooth > 4 * min(losses)):
            break  # blown up: the rest of the sweep says nothing
        lrs.append(lr)
        losses.append(smooth)
    scale = run.lr / subject.config.lr  # the lr scaling for this batch size
    figure_path = out_dir / LR_FIGURE
    if len(losses) < 3 or min(losses) > (1 - FALL) * losses[0]:
        write_lr_figure(lrs, losses, figure_path, None)
        return Check("learning-rate range test", f"the loss never fell ({low:g} to {high:g})", "a falling loss",
                     "fail", "no lr in the range trains: check the model and loss (the checks above)", None)
    lowest = min(range(len(losses)), key=losses.__getitem__)  # past it the loss rises: too large an lr
    slopes = {i: (losses[i + 1] - losses[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1])
              for i in range(1, min(lowest + 1, len(losses) - 1))}
    steepest = lrs[min(slopes, key=slopes.__getitem__)] if slopes else lrs[lowest]
    write_lr_figure(lrs, losses, figure_path, steepest)
    return Check("learning-rate range test", f"steepest fall at lr {steepest:.3g} (batch {run.batch}); "
                 f"suggested lr={steepest / scale:.3g} at optim.base_batch",
                 f"the configured lr={subject.config.lr:g}", "note",
                 f"a starting point, not an optimum: the sweep trains {len(losses)} steps from init "
                 f"(figure: {figure_path.name})", steepest / scale)


def write_lr_figure(lrs: list[float], losses: list[float], path: Path, suggested: float | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(lrs, losses)
    if suggested is not None:
        ax.axvline(suggested, color="tab:red", linestyle="--", label=f"steepest fall: lr {suggested:.3g}")
        ax.legend(fontsize=10)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate", fontsize=11)
    ax.set_ylabel("training loss (smoothed)", fontsize=11)
    ax.set_title("learning-rate range test", fontsize=12)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)


STEPS = (1e-3, 1e-4, 1e-5, 1e-6)  # finite-difference steps: a wrong backward is wrong at every one of them


def gradient_check(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> tuple[float, str]:
    """Autograd against central finite differences in float64, per parameter tensor, along the tensor's own
    gradient direction v = g/|g|: the slope (L(θ+εv) - L(θ-εv)) / 2ε must equal g·v = |g|. A wrong backward gives
    a wrong g, and the loss's real slope along it differs at every ε. Each tensor is judged at its best ε of STEPS:
    a large one can cross a ReLU's kink or switch a max-pool, a small one drowns in rounding (1e-16 |L| / ε); one
    slope per tensor rather than per entry, whose gradient can be as small as that rounding. The largest relative
    error over the tensors, and the tensor it was found in. Dropout is switched off (it is random)."""
    model = copy.deepcopy(model).double()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    x = x.double()
    loss_fn = copy.deepcopy(loss_fn).double()
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(x), y), [p for _, p in params], allow_unused=True)
    norms = [0.0 if g is None else g.norm().item() for g in grads]
    # a gradient 1e10 times smaller than the largest is zero up to rounding: a bias just before a norm, which removes
    # it (BN subtracts each channel's mean), gets ~1e-17 where its true gradient is 0 - nothing finite differences
    # can compare (their slope there is rounding too: a relative error of 1 between two zeros)
    floor = 1e-10 * max(norms, default=0.0)
    worst, where = 0.0, ""
    with torch.no_grad():
        for (name, p), g, norm in zip(params, grads, norms, strict=True):
            if norm <= floor:
                continue  # no gradient reaches it: nothing to compare
            error = min(_slope_error(model, loss_fn, x, y, p, g / norm, norm, eps) for eps in STEPS)
            if error > worst:
                worst, where = error, name
    return worst, where


def _slope_error(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor,
                 direction: torch.Tensor, slope: float, eps: float) -> float:
    kept = p.clone()
    p.add_(direction, alpha=eps)
    above = loss_fn(model(x), y).item()
    p.copy_(kept).add_(direction, alpha=-eps)
    below = loss_fn(model(x), y).item()
    p.copy_(kept)
    numeric = (above - below) / (2 * eps)
    return abs(numeric - slope) / max(abs(numeric), slope)


def gradients_correct(subject: Subject) -> Check:
    subject.fresh()
    run, settings = subject.run, subject.settings
    x, y = run.prepare(run.data.train_x[:settings.gradient_examples]), run.data.train_y[:settings.gradient_examples]
    worst, where = gradient_check(run.model, run.loss_fn, x, y)
    passed = worst <= settings.gradient_tolerance
    return Check("gradients match finite differences", f"largest relative error {worst:.2g}"
                 + (f" ({where})" if where else ""), f"<= {settings.gradient_tolerance:g} (float64, the slope along "
                 f"each tensor's gradient)",
                 "pass" if passed else "fail",
                 "" if passed else f"autograd disagrees with the loss's own slope at {where}: a custom layer's "
                 "backward is wrong", worst)


def run_checks(config: CheckConfig, out_dir: Path) -> list[Check]:
    run = build_run(config)
    subject = Subject(run, config, copy.deepcopy(run.model.state_dict()))
    return [loss_at_init(subject), overfit_one_batch(subject), examples_independent(subject),
            *input_statistics(subject), lr_range(subject, out_dir), gradients_correct(subject)]


def check(config: CheckConfig, out_dir: Path) -> list[Check]:
    """Run every check, print the table, write check.json and the table to TensorBoard's Text tab."""
    from torch.utils.tensorboard import SummaryWriter

    found = run_checks(config, out_dir)
    console.print(check_table(found))
    replace_atomically(out_dir / RESULT_FILE, lambda f: f.write(json.dumps(
        {"checks": [asdict(c) for c in found], "config": to_dict(config)}, indent=2, default=str).encode()))
    with SummaryWriter(str(out_dir)) as writer:
        writer.add_text("check", as_markdown(found))
        if (out_dir / LR_FIGURE).exists():
            write_png(writer, "check/lr_range", (out_dir / LR_FIGURE).read_bytes())
    failed = [c.name for c in found if c.verdict == "fail"]
    say(f"{len(found) - len(failed)} of {len(found)} checks passed or noted; "
        + (f"failed: {', '.join(failed)}." if failed else "none failed.")
        + f" Folder: {out_dir} ({RESULT_FILE}, {LR_FIGURE}).", "red" if failed else "green")
    return found


def sweep_outcome(sweep_dir: Path) -> tuple[int, str]:
    """A sweep of checks: exit 1 and the jobs that failed a check, or (0, "")."""
    results = sorted(Path(sweep_dir).rglob(RESULT_FILE))
    failing = [path.parent.name for path in results
               if any(c["verdict"] == "fail" for c in json.loads(path.read_text())["checks"])]
    if not failing:
        return 0, ""
    return 1, f"checks failed in {len(failing)} of the sweep's {len(results)} jobs: {', '.join(failing)}."


VERDICT_STYLE = {"pass": "green", "fail": "bold red", "note": "yellow"}


def check_table(found: list[Check]) -> Table:
    table = Table(title="diagnose check", header_style="bold", show_lines=True)
    for column in ("check", "measured", "expected", "verdict", "remedy"):
        table.add_column(column, overflow="fold")  # prose wraps between words; a key too long for its cell folds whole
    for c in found:
        table.add_row(c.name, c.measured, c.expected, f"[{VERDICT_STYLE[c.verdict]}]{c.verdict}[/]", c.remedy)
    return table


def as_markdown(found: list[Check]) -> str:
    rows = ["| check | measured | expected | verdict | remedy |", "|---|---|---|---|---|"]
    rows += [f"| {c.name} | {c.measured} | {c.expected} | **{c.verdict}** | {c.remedy} |" for c in found]
    return "\n".join(rows)
