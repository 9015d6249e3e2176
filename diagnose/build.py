"""Turn a composed config into the objects of one run: data, model, loss, optimizer, schedule."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from diagnose.components.activations import ACTIVATIONS, GAINS
from diagnose.components.downsample import DOWNSAMPLES
from diagnose.components.inits import INITS
from diagnose.components.losses import LOSSES
from diagnose.components.norms import NORMS
from diagnose.components.optim import (
    CLIPS,
    FUSED_DEVICES,
    OPTIMIZERS,
    SCHEDULES,
    clamp_gates_after_each_step,
    lr_scheduler,
    param_groups,
    scaled_lr,
)
from diagnose.data import DeviceData, make_synthetic, read_dataset, split, to_input
from diagnose.diagnostics.monitor import DiagSettings
from diagnose.errors import UserError
from diagnose.findings import Thresholds
from diagnose.models.cnn import build_cnn
from diagnose.models.init import init_weights
from diagnose.models.layout import to_best_layout
from diagnose.models.mlp import build_mlp
from diagnose.models.modes import batch_statistics
from diagnose.registry import lookup
from diagnose.validate import check_config


def options(group: DictConfig) -> dict[str, Any]:
    """A component's config without its `name`: the keyword arguments of its factory."""
    opts = OmegaConf.to_container(group, resolve=True)
    opts.pop("name")
    return opts


def component(table: Mapping[str, Callable], group: DictConfig, kind: str) -> Callable:
    """The factory `group.name` picks, with the group's other keys bound as keyword arguments."""
    factory = lookup(table, group.name, kind)
    return factory if factory is None else partial(factory, **options(group))


def call(factory: Callable, kind: str, name: str, *args: Any) -> Any:
    """Call a component factory, turning a bad option value into a message that names the option."""
    try:
        return factory(*args)
    except UserError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        raise UserError(f"{kind}={name} cannot be built with these options: {err}") from None


def thresholds(cfg: DictConfig) -> Thresholds:
    return call(partial(Thresholds, **OmegaConf.to_container(cfg, resolve=True)), "findings", "thresholds")


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


def load_data(cfg: DictConfig, device: torch.device) -> DeviceData:
    if cfg.name == "synthetic":
        raw = make_synthetic(cfg.channels, cfg.size, cfg.classes, cfg.train_count, cfg.test_count, cfg.seed)
    else:
        raw = read_dataset(cfg.name, Path(cfg.root), download=cfg.download, mirror=cfg.mirror)
    return split(raw, val_size=cfg.val_size, subset=cfg.subset, device=device)


def _cnn(cfg: DictConfig, shape: tuple[int, int, int], n_classes: int, act: Callable, norm: Callable) -> nn.Module:
    downsample = component(DOWNSAMPLES, cfg.downsample, "downsample")
    channels, height, width = shape
    return build_cnn(channels, min(height, width), n_classes, list(cfg.model.widths), cfg.model.blocks,
                     act, norm, downsample, cfg.model.dropout)


def _mlp(cfg: DictConfig, shape: tuple[int, int, int], n_classes: int, act: Callable, norm: Callable) -> nn.Module:
    channels, height, width = shape
    return build_mlp(channels * height * width, n_classes, cfg.model.depth, cfg.model.width, act, norm,
                     cfg.model.dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": _cnn, "mlp": _mlp}


def build_model(cfg: DictConfig, shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """The configured network, initialised; `shape` is one input's (C, H, W)."""
    act = component(ACTIVATIONS, cfg.act, "act")
    norm = component(NORMS, cfg.norm, "norm")
    build = lookup(MODELS, cfg.model.name, "model")
    model = call(partial(build, cfg, shape, n_classes, act, norm), "model", cfg.model.name)
    scheme = component(INITS, cfg.init, "init")
    if scheme is not None:
        gain = call(component(GAINS, cfg.act, "act"), "act", cfg.act.name)
        call(partial(init_weights, model, scheme, gain), "init", cfg.init.name)
    return model


def build_loss(cfg: DictConfig, n_classes: int) -> nn.Module:
    weight = cfg.get("weight")
    if weight is not None and len(weight) != n_classes:
        raise UserError(f"loss.weight has {len(weight)} class weights, but the dataset has {n_classes} "
                        f"classes. Give one weight per class, or loss.weight=null.")
    alpha = cfg.get("alpha")
    if OmegaConf.is_list(alpha) and len(alpha) != n_classes:
        raise UserError(f"loss.alpha has {len(alpha)} entries, but the dataset has {n_classes} classes. "
                        f"Give one number, one per class, or null.")
    return call(component(LOSSES, cfg, "loss"), "loss", cfg.name)


def dry_run(model: nn.Module, loss_fn: nn.Module, data: DeviceData, cfg: DictConfig) -> None:
    """One forward pass and loss on a training-sized batch, before anything is trained or written: shapes that
    do not fit (a norm over a 1x1 map, BatchNorm over one example) and bad loss options fail here, with a
    message, rather than as a traceback at step 1. BN's running statistics are left as they were."""
    x = to_input(data.train_x[:cfg.batch], data.mean, data.std, center=cfg.data.center)
    with torch.no_grad(), batch_statistics(model):
        try:
            loss_fn(model(x).float(), data.train_y[:cfg.batch])
        except (RuntimeError, ValueError, IndexError) as err:
            raise UserError(f"This combination cannot train: {str(err).splitlines()[0]} (model={cfg.model.name}, "
                            f"norm={cfg.norm.name}, act={cfg.act.name}, loss={cfg.loss.name}, batch={cfg.batch}). "
                            f"BatchNorm needs batch >= 2; instance and batch-instance norm need at least 2x2 maps, "
                            f"so fewer stages (model.widths) or larger images.") from None


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
    diag: DiagSettings
    findings: Thresholds


def build_run(cfg: DictConfig) -> Run:
    """Validate the config and build the run; every user mistake surfaces here as a UserError."""
    check_config(cfg)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # model init draws from the global generator
    data = load_data(cfg.data, device)
    n_train = len(data.train_y)
    if n_train < cfg.batch:
        raise UserError(f"batch={cfg.batch} is larger than the {n_train} training examples "
                        f"(data.subset={cfg.data.subset}, data.val_size={cfg.data.val_size}). "
                        f"Use a smaller batch or more data.")
    model = to_best_layout(build_model(cfg, data.shape, data.n_classes).to(device), device)
    loss_fn = build_loss(cfg.loss, data.n_classes).to(device)
    dry_run(model, loss_fn, data, cfg)

    lr = scaled_lr(cfg.lr, cfg.batch, cfg.optim.base_batch, cfg.optim.lr_scaling)
    opt_options = options(cfg.optim)
    weight_decay = opt_options.pop("weight_decay", 0.0)
    for key in ("lr_scaling", "base_batch"):
        opt_options.pop(key)
    make_optimizer = partial(lookup(OPTIMIZERS, cfg.optim.name, "optim"), **opt_options)
    optimizer = call(make_optimizer, "optim", cfg.optim.name, param_groups(model, lr, weight_decay), lr,
                     True if device.type in FUSED_DEVICES else None)  # None: torch's own default
    clamp_gates_after_each_step(optimizer, model)

    steps_per_epoch = n_train // cfg.batch  # the last incomplete batch is dropped
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    multiplier = call(component(SCHEDULES, cfg.schedule, "schedule"), "schedule", cfg.schedule.name)
    clip = component(CLIPS, cfg.clip, "clip")
    return Run(
        data=data,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=lr_scheduler(optimizer, multiplier, total_steps),
        clip=clip,
        device=device,
        batch=cfg.batch,
        lr=lr,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        center=cfg.data.center,
        augment=cfg.data.augment,
        autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None,
        seed=cfg.seed,
        log_every=cfg.log_every,
        diag=call(partial(DiagSettings, **options(cfg.diag)), "diag", cfg.diag.name),
        findings=thresholds(cfg.findings),
    )
