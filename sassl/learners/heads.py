"""Projection / prediction MLPs, shared by the learners."""
from __future__ import annotations

import torch.nn as nn


def mlp(in_dim: int, hidden: int, out_dim: int, last_bn: bool = False, num_layers: int = 2) -> nn.Sequential:
    """(Linear-BN-ReLU) x (num_layers - 1), then Linear: SimCLR / BYOL / MoCo v2 heads with 2 layers, MoCo v3's
    ViT projector with 3. `last_bn` adds an affine-free BN at the end (SimCLR's design, which MoCo v3 follows)."""
    layers: list[nn.Module] = []
    for i in range(num_layers - 1):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(in_dim if num_layers == 1 else hidden, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
