"""Projection / prediction MLPs and the momentum update, shared by the learners."""
from __future__ import annotations

import torch
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


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """target = m * target + (1 - m) * online, parameters and buffers (BN statistics copied)."""
    for po, pt in zip(online.parameters(), target.parameters()):
        pt.mul_(m).add_(po.detach(), alpha=1 - m)
    for bo, bt in zip(online.buffers(), target.buffers()):
        bt.copy_(bo)


def frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
