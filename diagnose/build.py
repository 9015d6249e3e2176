"""Turn a composed config into the objects of one run: data, model, loss, optimizer, schedule."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diagnose.components.activations import ACTIVATIONS, Activation
from diagnose.components.downsample import DOWNSAMPLES
from diagnose.components.inits import INITS
from diagnose.components.losses import LOSSES
from diagnose.components.norms import NORMS, Norm
from diagnose.components.optim import (
    CLIPS,
    FUSED_DEVICES,
    SCHEDULES,
    clamp_gates_after_each_step,
    lr_scheduler,
    make_optimizer,
    scaled_lr,
)
from diagnose.components.targets import build_target_model, is_target, target_activation, target_loss, target_norm
from diagnose.config import (
    DataConfig,
    DiagConfig,
    FileConfig,
    ModelConfig,
    SplitConfig,
    SyntheticConfig,
    Thresholds,
    TrainConfig,
)
from diagnose.console import say
from diagnose.data.arrays import read_arrays
from diagnose.data.batches import to_input
from diagnose.data.datasets import DeviceData, read_dataset, read_sample, split
from diagnose.data.synthetic import make_synthetic
from diagnose.diagnostics.layer_stats import stride
from diagnose.diagnostics.layers import Layer, discover_layers, measured_layers
from diagnose.errors import UserError
from diagnose.models import MODELS
from diagnose.models.init import init_weights
from diagnose.models.layout import to_best_layout
from diagnose.models.modes import batch_statistics
from diagnose.registry import Options, lookup, make, settings
from diagnose.training.threads import Threads, training_pass

LOSS_POINTS = 20  # a short run's training-loss curve gets at least this many points (a host read each, nothing more)

DEVICES: dict[str, Callable[[], bool]] = {  # name -> is it on this machine; auto takes the first that is
    "cuda": torch.cuda.is_available,
    "mps": torch.backends.mps.is_available,
    "cpu": lambda: True,
}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(next(device for device, present in DEVICES.items() if present()))
    if not lookup({**DEVICES, "auto": None}, name, "device")():
        raise UserError(f"device={name} was asked for, but this machine has no {name} device. "
                        f"Use device=auto to take the best one available.")
    return torch.device(name)


def load_data(options: SplitConfig, device: torch.device) -> DeviceData:
    """The configured data on `device`; one line says which (a newcomer learns what the default trains on)."""
    if isinstance(options, SyntheticConfig):
        raw = make_synthetic(options.channels, options.size, options.classes, options.train_count,
                             options.test_count, options.seed)
    elif isinstance(options, FileConfig):
        raw = read_arrays(options.path, options._target_, layout=options.layout, classes=options.classes,
                          augment=options.augment)
    elif isinstance(options, DataConfig):
        raw = read_dataset(options.name, Path(options.root), download=options.download, mirror=options.mirror)
    else:  # SampleConfig: shipped inside the package
        raw = read_sample(options.name)
    data = split(raw, val_size=options.val_size, subset=options.subset, device=device, test_subset=options.test_subset)
    say(data.describe())
    return data


def activation_of(options: Options) -> Activation:
    """The registry entry of `act=<name>`, or one made for `act._target_=<your class>`."""
    return target_activation(options) if is_target(options) else lookup(ACTIVATIONS, options.name, "act")


def norm_of(options: Options) -> Norm:
    return target_norm(options) if is_target(options) else lookup(NORMS, options.name, "norm")


def build_model(config: ModelConfig, shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """The configured network, initialised; `shape` is one input's (C, H, W). A `model._target_` is the user's own
    network: `init=` other than default re-initialises its conv/linear weights with gain 1 (which of its layers
    feed which activation is not known)."""
    if config.model.name == "cnn" and shape[1:] == (1, 1):  # data=file's feature vectors are (F, 1, 1)
        raise UserError(f"model=cnn needs images, but each input here is a vector of {shape[0]} numbers. Train an MLP "
                        f"on it: model=mlp.")
    scheme = lookup(INITS, config.init.name, "init")
    if is_target(config.model):
        model = build_target_model(config.model, shape, n_classes)
        if scheme.make is not None:
            init_weights(model, lambda weight, gain: make(scheme, config.init, weight, gain), 1.0)
        return model
    act, norm = activation_of(config.act), norm_of(config.norm)
    norm_layer = None if norm.make is None else lambda channels, spatial: make(norm, config.norm, channels, spatial)
    downsample = lookup(DOWNSAMPLES, config.downsample.name, "downsample")
    model = make(lookup(MODELS, config.model.name, "model"), config.model, shape, n_classes,
                 lambda: make(act, config.act), norm_layer, downsample)
    if scheme.make is not None:
        gain = act.gain(**settings(config.act))
        init_weights(model, lambda weight, gain: make(scheme, config.init, weight, gain), gain)
    return model


def build_loss(options: Options, n_classes: int) -> nn.Module:
    weight = getattr(options, "weight", None)
    if weight is not None and len(weight) != n_classes:
        raise UserError(f"loss.weight has {len(weight)} class weights, but the dataset has {n_classes} "
                        f"classes. Give one weight per class, or loss.weight=null.")
    alpha = getattr(options, "alpha", None)
    if isinstance(alpha, list) and len(alpha) != n_classes:
        raise UserError(f"loss.alpha has {len(alpha)} entries, but the dataset has {n_classes} classes. "
                        f"Give one number, one per class, or null.")
    if is_target(options):
        return target_loss(options)
    return make(lookup(LOSSES, options.name, "loss"), options)


def dry_run(model: nn.Module, loss_fn: nn.Module, data: DeviceData, config: TrainConfig) -> None:
    """One forward pass and loss on a training-sized batch, before anything is trained or written: shapes that
    do not fit (a norm over a 1x1 map, BatchNorm over one example) fail here, with a message, rather than as a
    traceback at step 1. BN's running statistics are left as they were."""
    x = to_input(data.train_x[:config.batch], data.mean, data.std, center=config.data.center)
    with torch.no_grad(), batch_statistics(model):
        try:
            loss_fn(model(x).float(), data.train_y[:config.batch])
        except ValueError as err:  # what torch's norms raise for too few values; anything else is a bug
            if "Expected more than 1" not in str(err):
                raise
            raise UserError(f"This combination cannot train: {str(err).splitlines()[0]} (model={config.model.name}, "
                            f"norm={config.norm.name}, act={config.act.name}, loss={config.loss.name}, "
                            f"batch={config.batch}). "
                            f"BatchNorm needs batch >= 2; instance and batch-instance norm need at least 2x2 maps, "
                            f"so fewer stages (model.widths) or larger images.") from None


def model_layers(config: ModelConfig, model: nn.Module, example: torch.Tensor, act: Activation,
                 norm: Norm) -> list[Layer]:
    """The layers the instruments measure: the tool's own models' blocks (their act and norm entries), or those
    discovered on a user's network by running it once on `example`, with a line on what the hooks cannot see."""
    if not is_target(config.model):
        return measured_layers(model, act, norm)
    discovery = discover_layers(model, example, config.model.act_kind)
    if discovery.unseen:
        say(discovery.unseen, "yellow")
    return discovery.layers


@dataclass
class Run:
    """Everything the training loop needs, built and placed on the device."""

    data: DeviceData
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    clip: Callable[[list[nn.Parameter]], None] | None
    device: torch.device
    batch: int
    lr: float
    steps_per_epoch: int
    total_steps: int
    center: bool
    augment: bool
    autocast_dtype: torch.dtype | None
    seed: int
    log_every: int
    act: Activation  # the registry entries the model was built from: what the diagnostics measure follows them
    norm: Norm
    diag: DiagConfig
    findings: Thresholds
    threads: Threads | None = None  # the CPU threads it uses (threads=auto: the faster of 1 and every core, re-checked)
    layers: list[Layer] = field(default_factory=list)  # what the instruments measure, in the order they run

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs from uint8 images, normalised as configured."""
        return to_input(x, self.data.mean, self.data.std, center=self.center)


def build_run(config: TrainConfig) -> Run:
    """Build the run a checked config describes; every user mistake left surfaces here as a UserError."""
    device = pick_device(config.device)
    torch.manual_seed(config.seed)  # model init draws from the global generator
    data = load_data(config.data, device)
    n_train = len(data.train_y)
    if n_train < config.batch:
        raise UserError(f"batch={config.batch} is larger than the {n_train} training examples "
                        f"(data.subset={config.data.subset}, data.val_size={config.data.val_size}). "
                        f"Use a smaller batch or more data.")
    act, norm = activation_of(config.act), norm_of(config.norm)
    model = build_model(config, data.shape, data.n_classes).to(device)
    if not is_target(config.model):  # a user's network may .view() its maps, which channels_last would break
        model = to_best_layout(model, device, act, norm)
    loss_fn = build_loss(config.loss, data.n_classes).to(device)
    dry_run(model, loss_fn, data, config)
    layers = model_layers(config, model, to_input(data.train_x[:config.batch], data.mean, data.std,
                                                  center=config.data.center), act, norm)
    threads = None
    if device.type == "cpu":  # threads=auto is timed on this model's own step
        x = to_input(data.train_x[:config.batch], data.mean, data.std, center=config.data.center)
        threads = Threads(config.threads, training_pass(model, loss_fn, x, data.train_y[:config.batch]))

    lr = scaled_lr(config.lr, config.batch, config.optim.base_batch, config.optim.lr_scaling)
    optimizer = make_optimizer(config.optim, model, lr, True if device.type in FUSED_DEVICES else None)  # None: torch's
    clamp_gates_after_each_step(optimizer, model)

    steps_per_epoch = n_train // config.batch  # the last incomplete batch is dropped
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    multiplier = make(lookup(SCHEDULES, config.schedule.name, "schedule"), config.schedule)
    clip_entry = lookup(CLIPS, config.clip.name, "clip")
    clip = None if clip_entry.make is None else lambda params: make(clip_entry, config.clip, params)
    return Run(
        data=data,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=lr_scheduler(optimizer, multiplier, total_steps),
        clip=clip,
        device=device,
        batch=config.batch,
        lr=lr,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        center=config.data.center,
        augment=config.data.augment,
        autocast_dtype=torch.bfloat16 if config.precision == "bf16" else None,
        seed=config.seed,
        log_every=stride(config.log_every, total_steps, LOSS_POINTS),
        act=act,
        norm=norm,
        diag=config.diag,
        findings=config.findings,
        threads=threads,
        layers=layers,
    )
