"""The config schema: dataclasses that are at once the types Hydra checks every yaml file and override against,
the defaults, and (in `__post_init__`) the range checks. A component group's schema is its registry entry's
`options`; the rest is here.

`OmegaConf.to_object(cfg)` turns a composed config into these objects, running the range checks; everything
below the CLI takes them, never a DictConfig.
"""

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diagnose import checks
from diagnose.components.activations import ACTIVATIONS
from diagnose.components.downsample import DOWNSAMPLES
from diagnose.components.inits import INITS
from diagnose.components.losses import LOSSES
from diagnose.components.norms import NORMS
from diagnose.components.optim import CLIPS, OPTIMIZERS, SCHEDULES
from diagnose.components.targets import SCHEMAS as TARGETS
from diagnose.components.targets import TARGET
from diagnose.data.sources import SOURCES
from diagnose.errors import UserError
from diagnose.models import MODELS
from diagnose.registry import Options, lookup

PRECISIONS = ("fp32", "bf16")
# torch's generators take a signed 64-bit seed, and a run derives more from it (seed * 1_000_003 + step): 32 bits
# leave room for that
MAX_SEED = 2**32 - 1


@dataclass
class SplitConfig(Options):
    """What every dataset option has: how it is split and prepared."""

    val_size: int = 5000  # held out from the official training set (fixed split, whatever the seed)
    subset: int | None = None  # train on only this many examples (quick runs)
    test_subset: int | None = None  # test on only the first this many test examples (quick runs)
    center: bool = True  # normalise inputs to zero mean, unit std per channel; false keeps raw [0, 1] pixels
    augment: bool = False  # random crop (4-pixel padding) + horizontal flip, on the device

    def __post_init__(self) -> None:
        checks.optional_whole("data.val_size", self.val_size, minimum=0)  # None: FileConfig's own default
        checks.optional_whole("data.subset", self.subset)
        checks.optional_whole("data.test_subset", self.test_subset)


@dataclass
class DataConfig(SplitConfig):
    """A published dataset, read from its files."""

    root: str = "${oc.env:DIAGNOSE_DATA,data}"  # looked up first; then /usr/share/datasets/<name>; then downloaded
    download: bool = True
    mirror: str | None = None  # base URL to download from instead of the official sources


@dataclass
class SampleConfig(SplitConfig):
    """A sample of a published dataset shipped inside the package: no files to look up, nothing to download."""

    val_size: int = 1000  # of its 10,000 training examples: 9,000 to train on, val accuracy to about a point


@dataclass
class SyntheticConfig(SplitConfig):
    """Generated, learnable images: no files, for tests and quick demos."""

    channels: int = 1
    size: int = 28
    classes: int = 10
    train_count: int = 5000
    test_count: int = 1000
    val_size: int = 1000
    seed: int = 0  # which synthetic dataset (independent of the run seed)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, least in (("channels", 1), ("size", 4), ("classes", 2), ("train_count", 1), ("test_count", 1)):
            checks.whole(f"data.{key}", getattr(self, key), minimum=least)
        checks.whole("data.seed", self.seed, minimum=0, maximum=MAX_SEED)


LAYOUTS = ("auto", "nchw", "nhwc")


@dataclass
class FileConfig(SplitConfig):
    """Your data: arrays from a .npz or .pt file, or returned by a function of yours (diagnose/data/arrays.py)."""

    path: str | None = None  # a .npz or .pt file holding train_x, train_y, test_x, test_y (or x_train, y_train, ...)
    _target_: str | None = None  # instead of a file: module.function returning the same, from the current directory
    classes: int | None = None  # null: the largest label + 1
    layout: str = "auto"  # of 4-D images: nchw, nhwc, or auto (channels first where that axis is 1, 3 or 4, else last)
    val_size: int | None = None  # held out from the training examples (fixed split); null: a tenth of them

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.optional_whole("data.classes", self.classes, minimum=2)
        checks.one_of("data.layout", self.layout, LAYOUTS)


@dataclass
class Flatness:
    """Where the flat tails of a saturating activation begin."""

    sigmoid_flat: float = 0.02  # sigmoid outputs below this or above 1 - this count as saturated
    tanh_flat: float = 0.97  # |tanh| above this counts as saturated

    def __post_init__(self) -> None:
        checks.between("sigmoid_flat", self.sigmoid_flat, 0, 0.5, high_open=True)
        checks.between("tanh_flat", self.tanh_flat, 0, 1, high_open=True)


@dataclass
class DiagConfig(Flatness, Options):
    """How often and how much is measured; these defaults are the `default` preset."""

    every: int = 100  # per-layer activation/gradient/weight statistics every N steps (0: never)
    hist_every: int = 1000  # histograms every N steps (0: never)
    probe_every: int = 1000  # dead units on the fixed probe batch every N steps (0: never)
    probe_size: int = 512  # examples in the probe batch, taken from the validation split
    dead_since: int = 0  # "dead for good" counts the probes from this step on
    bn_eval_gap: bool = True  # at each evaluation: val accuracy with BN in train mode vs eval mode
    locate_nonfinite: bool = True  # on divergence, replay from the last good state to name the first bad layer
    landscape: bool = False  # loss-landscape smoothness along the gradient (Santurkar et al. 2018), ~9 passes
    landscape_every: int = 100
    # the gradient noise scale B_simple (McCandlish et al. 2018) at the step's weights: every N steps (0: never; 100
    # is a good start), forward/backward passes over batches of noise_batch training examples of its own, each in
    # noise_micro micro-batches, until |G|² stands out of its noise or noise_max_batch examples are drawn. Off by
    # default: each batch costs about noise_batch / batch training steps (README: Performance)
    noise_every: int = 0
    noise_batch: int = 4096
    noise_micro: int = 64
    noise_max_batch: int = 16384  # examples a measurement draws at most (README: the noise scale)
    # the loss's sharpness λ_max (power iteration) and Hessian trace (Hutchinson) on the first curvature_batch
    # training examples, every N steps (0: never; off by default: one measurement costs ~250 training steps of the
    # default CNN at batch 128 on a CPU, ~50 of the MLP; README: Performance)
    curvature_every: int = 0
    curvature_batch: int = 256
    curvature_iterations: int = 20  # power-iteration steps at most (it stops once λ_max changes < 1 %)
    curvature_samples: int = 10  # Rademacher vectors of the trace estimate

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("every", "hist_every", "probe_every", "dead_since", "noise_every", "curvature_every"):
            checks.whole(f"diag.{key}", getattr(self, key), minimum=0)
        checks.whole("diag.probe_size", self.probe_size)
        # the errors come from the spread between the micro-batches, and the fewer, the noisier they are themselves:
        # measured B_simple's actual errors against the stated ones were 1.0x with 64 micro-batches (the default),
        # up to 1.2x on real data and 1.6x on a linear regression with 16, up to 2.1x with 8
        checks.whole("diag.noise_micro", self.noise_micro, minimum=16)
        checks.whole("diag.noise_max_batch", self.noise_max_batch)
        for key in ("curvature_batch", "curvature_iterations", "curvature_samples"):
            checks.whole(f"diag.{key}", getattr(self, key))
        if self.noise_batch < 2 * self.noise_micro:  # BN cannot normalise a micro-batch of one example
            raise UserError(f"diag.noise_batch must hold at least 2 examples per micro-batch (2 * diag.noise_micro = "
                            f"{2 * self.noise_micro}); got {self.noise_batch}.")
        if self.noise_max_batch < self.noise_batch:
            raise UserError(f"diag.noise_max_batch ({self.noise_max_batch}) must be at least diag.noise_batch "
                            f"({self.noise_batch}): a measurement draws whole batches of noise_batch examples.")
        checks.whole("diag.landscape_every", self.landscape_every)


@dataclass
class Thresholds(Options):
    """When a statistic becomes a finding (printed after a run, stored in metrics.json, listed by `report`)."""

    dead: float = 0.4  # share of a ReLU layer's units dead on the probe batch
    saturation: float = 0.5  # share of a sigmoid/tanh layer's outputs in the flat tails
    depth_ratio: float = 100.0  # activation std (or gradient norm) changing more than this over the depth
    update_ratio_low: float = 1e-5  # update/weight ratio below this: the layer hardly learns (lr too low)
    update_ratio_high: float = 0.1  # above this: the weights are rewritten each step (lr too high); healthy ~1e-3
    sign_agreement: float = 0.4  # first-layer weight-gradient sign agreement, mean over the run: non-centred inputs
    bn_gap: float = 0.05  # val accuracy difference between BN's train mode and eval mode
    bn_batch_drop: float = 0.1  # in a sweep: BN val accuracy at the smallest batch this far below the largest
    chance_margin: float = 0.05  # a final accuracy at most this far above chance (1 / classes): did not learn
    noise_ratio: float = 10.0  # the batch this many times below or above the gradient noise scale B_simple

    def __post_init__(self) -> None:
        for key in ("dead", "saturation", "sign_agreement", "bn_gap", "bn_batch_drop", "chance_margin"):
            checks.between(f"findings.{key}", getattr(self, key), 0, 1)
        for key in ("depth_ratio", "update_ratio_low", "update_ratio_high", "noise_ratio"):
            checks.positive(f"findings.{key}", getattr(self, key))


@dataclass
class ModelConfig:
    """The component groups a network is built from (`train` and `probe` share them)."""

    data: Options = MISSING
    model: Options = MISSING
    act: Options = MISSING
    init: Options = MISSING
    norm: Options = MISSING
    downsample: Options = MISSING
    loss: Options = MISSING
    findings: Thresholds = MISSING


@dataclass
class TrainConfig(ModelConfig):
    """`diagnose train`."""

    optim: Options = MISSING
    schedule: Options = MISSING
    clip: Options = MISSING
    diag: DiagConfig = MISSING
    batch: int = 128
    lr: float = 0.1  # at optim.base_batch; scaled for other batch sizes by optim.lr_scaling
    epochs: int = 2
    steps: int | None = None  # train exactly this many steps instead of `epochs` epochs
    seed: int = 0
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    # CPU intra-op threads: auto times the run's own step with 1 thread and with every core it may use (a sweep
    # job's share, OMP_NUM_THREADS, or the cores) and keeps the faster; or a number
    threads: Any = "auto"
    log_every: int = 50  # steps between logged training loss/accuracy/throughput
    resume: str | None = None  # a run folder: continue that run from its checkpoint, in that folder

    def __post_init__(self) -> None:
        checks.whole("batch", self.batch)
        checks.positive("lr", self.lr)
        checks.whole("epochs", self.epochs)
        checks.optional_whole("steps", self.steps)
        checks.whole("seed", self.seed, minimum=0, maximum=MAX_SEED)
        checks.whole("log_every", self.log_every)
        checks.one_of("precision", self.precision, PRECISIONS)
        if self.threads != "auto":
            checks.whole("threads (auto or a number)", self.threads)


@dataclass
class CheckSettings:
    """`diagnose check`: what each check measures on and when it passes."""

    examples: int = 512  # for the loss at init, the input statistics and the shuffled-label accuracy
    init_loss_tolerance: float = 0.5  # the loss at init within this fraction of the equal-outputs loss
    overfit_examples: int = 32
    overfit_steps: int = 300
    overfit_accuracy: float = 1.0  # train accuracy on those examples to reach
    leak_tolerance: float = 1e-6  # gradient reaching other examples' inputs, relative to the example's own
    imbalance: float = 2.0  # largest / smallest class count above this is a note
    shuffled_steps: int = 100  # training steps on shuffled labels
    shuffled_margin: float = 0.1  # accuracy allowed above chance after them
    lr_min: float = 1e-5
    lr_max: float = 10.0
    lr_range_steps: int = 100
    gradient_examples: int = 4
    # relative error of autograd against finite differences (float64, the best of 4 steps): healthy ReLU/max-pool
    # CNNs reach ~2e-3 where the difference steps across kinks; a wrong backward is off by 10 % or more
    gradient_tolerance: float = 1e-2

    def __post_init__(self) -> None:
        for key in ("examples", "overfit_examples", "overfit_steps", "shuffled_steps", "lr_range_steps",
                    "gradient_examples"):
            checks.whole(f"check.{key}", getattr(self, key))
        for key in ("overfit_accuracy", "shuffled_margin"):
            checks.between(f"check.{key}", getattr(self, key), 0, 1)
        for key in ("init_loss_tolerance", "leak_tolerance", "imbalance", "lr_min", "lr_max", "gradient_tolerance"):
            checks.positive(f"check.{key}", getattr(self, key))
        if self.lr_min >= self.lr_max:
            raise UserError(f"check.lr_min ({self.lr_min:g}) must be below check.lr_max ({self.lr_max:g}).")


@dataclass
class CheckConfig(TrainConfig):
    """`diagnose check`: train's config and the checks' own settings."""

    check: CheckSettings = field(default_factory=CheckSettings)


PROBE_INPUTS = ("gaussian", "data")
JACOBIAN_METHODS = ("auto", "exact", "moments", "off")


@dataclass
class ProbeInput:
    input: str = "gaussian"  # gaussian: N(0, 1) inputs of probe.shape; data: a batch of the data group's images
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # (C, H, W) of a gaussian input
    classes: int = 10  # labels of a gaussian input are drawn uniformly from this many classes
    batch: int = 256
    # the input-output Jacobian's spectrum per depth: exact singular values, Hutchinson moments, auto (exact while
    # the Jacobians of one example hold at most 60M entries), or off
    jacobian: str = "auto"
    jacobian_examples: int = 2  # examples of the batch whose Jacobians are pooled

    def __post_init__(self) -> None:
        checks.one_of("probe.input", self.input, PROBE_INPUTS)
        checks.one_of("probe.jacobian", self.jacobian, JACOBIAN_METHODS)
        checks.whole("probe.jacobian_examples", self.jacobian_examples)
        if len(self.shape) != 3:
            raise UserError(f"probe.shape must be (C, H, W), three whole numbers; got {self.shape}.")
        for size in self.shape:
            checks.whole("every entry of probe.shape", size)
        checks.whole("probe.classes", self.classes, minimum=2)
        checks.whole("probe.batch", self.batch, minimum=2)


@dataclass
class ProbeConfig(Flatness, ModelConfig):
    """`diagnose probe`: one batch through the network at initialisation."""

    probe: ProbeInput = field(default_factory=ProbeInput)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.whole("seed", self.seed, minimum=0, maximum=MAX_SEED)


@cache
def schemas() -> dict[str, dict[str, type]]:
    """group -> option name -> the schema of that option's config: the groups whose options are registry entries
    (torch-free: their makers import torch when they build)."""
    registries = {"act": ACTIVATIONS, "init": INITS, "norm": NORMS, "downsample": DOWNSAMPLES, "loss": LOSSES,
                  "model": MODELS, "optim": OPTIMIZERS, "schedule": SCHEDULES, "clip": CLIPS}
    found = {group: {name: entry.options for name, entry in registry.items()} for group, registry in registries.items()}
    for group, target in TARGETS.items():  # the user's own class: `<group>._target_=pkg.module.Class`
        found[group][TARGET] = target
    found["data"] = {**{name: SampleConfig if source.sample_of else DataConfig for name, source in SOURCES.items()},
                     "synthetic": SyntheticConfig, "file": FileConfig}
    assert tuple(found) == REGISTRY_GROUPS
    return found


REGISTRY_GROUPS = ("act", "init", "norm", "downsample", "loss", "model", "optim", "schedule", "clip", "data")
# group -> the one schema of all its options: the groups whose options are presets (conf/<group>/*.yaml)
PRESETS: dict[str, type] = {"diag": DiagConfig, "findings": Thresholds}
GROUPS = (*REGISTRY_GROUPS, *PRESETS)
COMMANDS: dict[str, type] = {"train": TrainConfig, "probe": ProbeConfig, "check": CheckConfig}


def schema(group: str, name: str) -> type:
    return PRESETS[group] if group in PRESETS else lookup(schemas()[group], name, group)


def from_dict(plain: dict[str, Any] | DictConfig, command: type = TrainConfig) -> Any:
    """A saved config (a checkpoint's, metrics.json's) as the schema's objects, checked as at composition."""
    try:
        return _from_dict(plain, command)
    except OmegaConfBaseException as err:
        raise UserError(f"The saved config does not fit this version's schema: {str(err).splitlines()[0]}. Start a "
                        f"new run with this version, or resume with the version that made the run.") from None


def _from_dict(plain: dict[str, Any] | DictConfig, command: type) -> Any:
    groups = {}
    for group in GROUPS:
        if group in plain and hasattr(command, group):  # findings saved before the schema had no name
            name = plain[group].get("name", "default")
            groups[group] = schema(group, name)(name=name)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(command(**groups)), plain))


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain, resolved values: what metrics.json and checkpoints keep."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
