"""BatchNorm's two views of its input: each batch's statistics (training) against the running averages (eval)."""

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from diagnose.components.norms import BATCH
from diagnose.diagnostics import stats
from diagnose.diagnostics.layer_stats import Schedule
from diagnose.diagnostics.layers import Layer
from diagnose.diagnostics.monitor import Instrument, Readings
from diagnose.results import Evaluation


class BatchNormStats(Instrument):
    """On measuring steps, how far each batch's statistics are from the running ones (bn_shift, bn_var_ratio) and
    Batch-Instance Norm's learned mix (bin_rho); at each evaluation, val accuracy with BN normalising by batch
    statistics, as in training, beside eval mode's (`accuracy_in_train_mode`, None: not measured)."""

    def __init__(self, layers: list[Layer], schedule: Schedule,
                 accuracy_in_train_mode: Callable[[], float] | None = None):
        self.layers = [layer for layer in layers if layer.role == "norm" and layer.kind == BATCH]
        self.schedule, self.accuracy_in_train_mode = schedule, accuracy_in_train_mode
        self._handles: list[RemovableHandle] = []
        self._running_before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def before_step(self, step: int, x: torch.Tensor, readings: Readings) -> None:
        if self.schedule.stats(step):
            for layer in self.layers:
                self._handles += [layer.module.register_forward_pre_hook(self._pre_hook(layer)),
                                  layer.module.register_forward_hook(self._hook(layer, readings))]

    def _pre_hook(self, layer: Layer):
        """Keep the running statistics from before this batch (C numbers): the forward hook then reads the batch's
        own statistics back from BN's update, running' = (1 - m) running + m batch, so measuring them costs no
        pass over the activations."""

        def pre_hook(module: nn.modules.batchnorm._BatchNorm, inputs: tuple) -> None:
            if module.training and getattr(module, "running_mean", None) is not None and module.momentum:
                self._running_before[layer.name] = (module.running_mean.clone(), module.running_var.clone())

        return pre_hook

    def _hook(self, layer: Layer, readings: Readings):
        def hook(module: nn.modules.batchnorm._BatchNorm, inputs: tuple, output: torch.Tensor) -> None:
            before = self._running_before.pop(layer.name, None)
            if before is None:
                return
            mean_before, var_before = before
            m, n = module.momentum, output.numel() // output.shape[1]
            batch_mean = (module.running_mean - (1 - m) * mean_before) / m
            batch_var = (module.running_var - (1 - m) * var_before) / m * (n - 1) / n  # BN keeps the unbiased var
            shift, ratio = stats.batch_vs_running(batch_mean, batch_var, mean_before, var_before, module.eps)
            readings.scalars[f"bn_shift/{layer.name}"] = shift
            readings.scalars[f"bn_var_ratio/{layer.name}"] = ratio
            if hasattr(module, "rho"):  # Batch-Instance Norm: how much BN (1) vs IN (0) it has learned
                readings.scalars[f"bin_rho/{layer.name}"] = module.rho.detach().mean()

        return hook

    def after_backward(self, step: int, readings: Readings) -> None:
        self.close()

    def on_evaluation(self, evaluation: Evaluation, readings: Readings) -> None:
        if self.layers and self.accuracy_in_train_mode is not None:
            evaluation.val_acc_bn_train_mode = self.accuracy_in_train_mode()
            readings.scalars["bn/val_acc_train_mode"] = evaluation.val_acc_bn_train_mode
            readings.scalars["bn/val_acc_eval_mode"] = evaluation.val_acc

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._running_before = [], {}
