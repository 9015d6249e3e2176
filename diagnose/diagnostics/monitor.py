"""The diagnostics object: attaches hooks to a model from outside, measures on chosen steps only."""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from diagnose.components.activations import SATURATING, Activation
from diagnose.components.norms import BATCH, Norm
from diagnose.diagnostics import stats
from diagnose.diagnostics.layers import Layer, measured_layers
from diagnose.diagnostics.writing import write_histogram, write_scalars

RUN_MEANS = ("update_ratio/", "sign_agreement/")  # metrics also kept as means over the run, for findings
UPDATE_RATIO_REFERENCE = 1e-3  # Karpathy's rule of thumb, drawn as a line on the update-ratio chart


@dataclass
class NonFinite:
    """Where a NaN/Inf first appeared."""

    step: int
    layer: str  # a module name, or "loss" when every measured tensor was still finite
    tensor: str  # "activation", "gradient" (w.r.t. the layer's output), "weight gradient" or "loss"

    def describe(self) -> str:
        where = "the loss" if self.layer == "loss" else f"the {self.tensor} of layer {self.layer}"
        return f"first non-finite value at step {self.step}, in {where}"


class Diagnostics:
    """Per-layer statistics of a training run, written to TensorBoard.

    Call order per step: `start(step)` before the forward pass, `after_backward()`, then `finish(step)` after
    the optimizer step. Hooks live only for the steps that measure and are removed after each of them, so
    the model runs bare in between; measured values are 0-d device tensors gathered with one host transfer
    per measuring step (a second one for histograms, on the steps that draw them) and dropped right after.
    """

    def __init__(self, model: nn.Module, writer: Any, settings: Any, act: Activation, norm: Norm):
        self.model, self.writer, self.settings = model, writer, settings
        self.layers = measured_layers(model, act, norm)
        self.weights = [(layer.name, layer.module.weight) for layer in self.layers if layer.role == "weight"]
        self._handles: list[RemovableHandle] = []
        self._scalars: list[tuple[str, torch.Tensor]] = []
        self._hists: list[tuple[str, torch.Tensor]] = []
        self._finite: list[tuple[str, str, torch.Tensor]] = []  # (layer, tensor kind, value): NaN/Inf = blew up
        self._weights_before: list[torch.Tensor] = []
        self._running_before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._stats = self._hist = False
        self.latest: dict[str, float] = {}  # the last measured values, for findings and depth plots
        self._sums: dict[str, tuple[float, int]] = {}  # tag -> (sum, count) for RUN_MEANS

    # ---- when to measure ----------------------------------------------------------------------------------
    def _due(self, every: int, step: int) -> bool:
        return every > 0 and step % every == 0

    def start(self, step: int, *, last: bool = False, watch: bool = False) -> None:
        """Attach hooks if step `step` (counted from 1) measures: every `every` steps and at the `last` step
        of the run (so a short run still ends with per-layer numbers); `watch` measures regardless."""
        self._stats = watch or (self.settings.every > 0 and (last or self._due(self.settings.every, step)))
        self._hist = not watch and self._due(self.settings.hist_every, step)
        if not (self._stats or self._hist):
            return
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
            if layer.kind == BATCH:
                self._handles.append(layer.module.register_forward_pre_hook(self._batchnorm_hook(layer)))

    @property
    def measuring(self) -> bool:
        return self._stats or self._hist

    # ---- hooks ----------------------------------------------------------------------------------------------
    def _forward_hook(self, layer: Layer):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._stats:
                mean, std = stats.mean_std(output)
                self._scalars += [(f"act_mean/{layer.name}", mean), (f"act_std/{layer.name}", std),
                                  (f"act_zero/{layer.name}", stats.zero_fraction(output))]
                self._finite.append((layer.name, "activation", mean))
                if layer.kind == BATCH:
                    self._batchnorm_stats(layer, module, output.numel() // output.shape[1])
                if layer.kind == SATURATING:
                    fraction = layer.entry.saturated(output.detach().float(), self.settings).float().mean()
                    self._scalars.append((f"saturation/{layer.name}", fraction))
            if self._hist:
                self._hists.append((f"act/{layer.name}", stats.histogram_sample(output)))
            if output.requires_grad:
                output.register_hook(self._grad_hook(layer))

        return hook

    def _grad_hook(self, layer: Layer):
        def hook(grad: torch.Tensor) -> None:
            if self._stats:
                mean, std = stats.mean_std(grad)
                self._scalars += [(f"grad_mean/{layer.name}", mean), (f"grad_std/{layer.name}", std),
                                  (f"grad_norm/{layer.name}", stats.norm_from(mean, std, grad.numel()))]
                self._finite.append((layer.name, "gradient", mean))
            if self._hist:
                self._hists.append((f"grad/{layer.name}", stats.histogram_sample(grad)))

        return hook

    def _batchnorm_hook(self, layer: Layer):
        """A pre-hook keeps the running statistics from before this batch (C numbers); the forward hook then
        reads the batch's own statistics back from BN's update, running' = (1 - m) running + m batch, so
        measuring them costs no pass over the activations."""

        def pre_hook(module: nn.modules.batchnorm._BatchNorm, inputs: tuple) -> None:
            if self._stats and module.training and module.running_mean is not None and module.momentum:
                self._running_before[layer.name] = (module.running_mean.clone(), module.running_var.clone())

        return pre_hook

    def _batchnorm_stats(self, layer: Layer, module: nn.modules.batchnorm._BatchNorm, n: int) -> None:
        before = self._running_before.pop(layer.name, None)
        if before is None:
            return
        mean_before, var_before = before
        m = module.momentum
        batch_mean = (module.running_mean - (1 - m) * mean_before) / m
        batch_var = (module.running_var - (1 - m) * var_before) / m * (n - 1) / n  # BN keeps the unbiased var
        shift, ratio = stats.batch_vs_running(batch_mean, batch_var, mean_before, var_before, module.eps)
        self._scalars += [(f"bn_shift/{layer.name}", shift), (f"bn_var_ratio/{layer.name}", ratio)]
        if hasattr(module, "rho"):  # Batch-Instance Norm: how much BN (1) vs IN (0) it has learned
            self._scalars.append((f"bin_rho/{layer.name}", module.rho.detach().mean()))

    # ---- after backward / after the update ------------------------------------------------------------
    def after_backward(self) -> None:
        """Weight gradients exist now and the weights are still the old ones."""
        if self._stats:
            for name, weight in self.weights:
                if weight.grad is None:
                    continue
                self._scalars += [(f"weight_norm/{name}", torch.linalg.vector_norm(weight.detach())),
                                  (f"weight_grad_norm/{name}", torch.linalg.vector_norm(weight.grad.detach())),
                                  (f"sign_agreement/{name}", stats.sign_agreement(weight.grad))]
                # the largest |entry| is NaN/Inf exactly when an entry is: unlike a sum or the norm's
                # squares, it cannot overflow while every entry is finite
                biggest = torch.linalg.vector_norm(weight.grad.detach(), ord=float("inf"))
                self._finite.append((name, "weight gradient", biggest))
            self._weights_before = [weight.detach().clone() for _, weight in self.weights]
        if self._hist:
            for name, weight in self.weights:
                self._hists.append((f"weight/{name}", stats.histogram_sample(weight)))
                if weight.grad is not None:
                    self._hists.append((f"weight_grad/{name}", stats.histogram_sample(weight.grad)))

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on measuring as if it had never stopped."""
        return {"sums": dict(self._sums), "latest": dict(self.latest)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._sums = dict(state.get("sums", {}))
        self.latest = dict(state.get("latest", {}))

    def run_means(self) -> dict[str, float]:
        """Means over every measuring step of the RUN_MEANS metrics: one step's value of these is noisy, and a
        schedule that ends at lr 0 makes the last update ratio tiny by design."""
        return {tag: total / count for tag, (total, count) in self._sums.items()}

    def by_layer(self) -> dict[str, dict[str, float]]:
        """The last measured values as {layer: {metric: value}}, layers in forward order."""
        grouped: dict[str, dict[str, float]] = {}
        for tag, value in self.latest.items():
            metric, _, layer = tag.partition("/")
            grouped.setdefault(layer, {})[metric] = value
        order = {name: i for i, name in enumerate(self.layer_names)}
        return dict(sorted(grouped.items(), key=lambda item: order.get(item[0], len(order))))

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def finish(self, step: int, write: bool = True) -> NonFinite | None:
        """Detach hooks, write what this step measured; report a non-finite value."""
        if not self.measuring:
            return None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for (name, weight), before in zip(self.weights, self._weights_before, strict=False):  # none: hist only
            # Karpathy's update:data ratio; about 1e-3 is healthy, far above or below is not
            ratio = (weight.detach() - before).norm() / before.norm().clamp(min=1e-12)
            self._scalars.append((f"update_ratio/{name}", ratio))
        self._weights_before = []

        flat = [value for _, value in self._scalars] + [flag for _, _, flag in self._finite]
        values = torch.stack(flat).tolist() if flat else []
        hists = stats.histograms([h for _, h in self._hists]).cpu() if self._hists else None
        measured = dict(zip((tag for tag, _ in self._scalars), values, strict=False))
        self.latest.update(measured)
        if write:
            reference = {"reference/update_ratio": UPDATE_RATIO_REFERENCE} if self.weights else {}
            write_scalars(self.writer, measured | reference, step)
            if hists is not None:
                for (tag, _), hist in zip(self._hists, hists, strict=True):
                    write_histogram(self.writer, tag, hist, step)
            for tag, value in measured.items():
                if tag.startswith(RUN_MEANS):
                    total, count = self._sums.get(tag, (0.0, 0))
                    self._sums[tag] = (total + value, count + 1)
        flags = values[len(self._scalars):]
        bad = next(((layer, kind) for (layer, kind, _), value in zip(self._finite, flags, strict=True)
                    if not math.isfinite(value)), None)
        self._scalars, self._hists, self._finite = [], [], []
        self._stats = self._hist = False
        return NonFinite(step, *bad) if bad else None

    def close(self) -> None:
        """Remove every hook (a run may end in the middle of a measuring step)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._scalars, self._hists, self._finite, self._weights_before = [], [], [], []
