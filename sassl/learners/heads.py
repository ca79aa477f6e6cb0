"""Projection / prediction MLPs, shared by the learners, and DINO's head."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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


class DINOHead(nn.Module):
    """DINO's projection head: a 3-layer MLP (Linear-GELU twice, no batch norm) to a `bottleneck`-wide code,
    L2-normalised, then a weight-normalised linear layer without bias to `out_dim` logits (the prototypes).
    NOTE: DINO writes the last layer with torch's weight_norm and freezes its gain at 1 (norm_last_layer); here
    the same map is written out: F.linear(x, normalize(prototypes.weight, dim=1))."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Linear(bottleneck, out_dim, bias=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # DINO's init: truncated normal, std 0.02, zero bias
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits."""
        return F.linear(F.normalize(self.mlp(x), dim=-1), F.normalize(self.prototypes.weight, dim=1))
