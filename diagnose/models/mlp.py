"""Multi-layer perceptron: depth x (linear -> norm -> act), then a linear head."""

import torch
from torch import nn

from diagnose.models.blocks import ActFactory, NormFactory, block


class MLP(nn.Module):
    def __init__(self, features: nn.Sequential, head: nn.Linear):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.head(self.features(x.flatten(1)))


def build_mlp(
    in_features: int,
    n_classes: int,
    depth: int,
    width: int,
    act: ActFactory,
    norm: NormFactory | None,
    dropout: float = 0.0,
) -> MLP:
    layers = [block(in_features if i == 0 else width, width, act, norm, spatial=False, dropout=dropout)
              for i in range(depth)]
    return MLP(nn.Sequential(*layers), nn.Linear(width if depth else in_features, n_classes))
