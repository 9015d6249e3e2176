"""The model families by short name: a CNN of conv-norm-act stages and an MLP of linear-norm-act layers."""

from dataclasses import dataclass, field

from diagnose import checks
from diagnose.errors import UserError
from diagnose.lazy import later
from diagnose.registry import Component, Options

cnn, mlp = later("diagnose.models.cnn"), later("diagnose.models.mlp")  # torch: imported when a model is built


@dataclass
class CNNOptions(Options):
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels per stage; halved maps between
    blocks: int = 1  # conv-norm-act blocks per stage
    dropout: float = 0.0  # before the linear head

    def __post_init__(self) -> None:
        if not self.widths:
            raise UserError("model.widths must be a list of channel counts, e.g. [32,64,128]; got [].")
        for width in self.widths:
            checks.whole("every entry of model.widths", width)
        checks.whole("model.blocks", self.blocks)
        checks.between("model.dropout", self.dropout, 0, 1, high_open=True)


@dataclass
class MLPOptions(Options):
    depth: int = 3  # hidden layers, each linear-norm-act
    width: int = 256
    dropout: float = 0.0  # after every hidden layer

    def __post_init__(self) -> None:
        checks.whole("model.depth", self.depth)
        checks.whole("model.width", self.width)
        checks.between("model.dropout", self.dropout, 0, 1, high_open=True)


# Each `make(shape, n_classes, act, norm, downsample, **settings)`: `shape` is one input's (C, H, W), `act` and
# `norm` build a layer (norm may be None), `downsample` is a DOWNSAMPLES entry.
MODELS: dict[str, Component] = {
    "cnn": Component(options=CNNOptions, make=lambda shape, n_classes, act, norm, downsample, widths, blocks, dropout:
        cnn.build_cnn(shape[0], min(shape[1:]), n_classes, widths, blocks, act, norm, downsample, dropout)),
    "mlp": Component(options=MLPOptions, make=lambda shape, n_classes, act, norm, downsample, depth, width, dropout:
        mlp.build_mlp(shape[0] * shape[1] * shape[2], n_classes, depth, width, act, norm, dropout)),
}
