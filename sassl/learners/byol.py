"""BYOL (Grill et al. 2020): online encoder + projector + predictor regress the momentum target's
projection of the other view; symmetric loss."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl.learners.losses import byol_loss
from sassl.learners.momentum import MomentumTwoTower


class BYOL(MomentumTwoTower):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, pred_hidden: int):
        """Settings: sassl.learners.LEARNERS['byol']."""
        super().__init__(backbone, feat_dim, proj_hidden, proj_dim, pred_hidden)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, x1_target: torch.Tensor) -> torch.Tensor:
        """Per image (B,): each view's prediction regressed on the other view's target, the two averaged."""
        p1, p2 = self.online(x1), self.online(x2)
        z1, z2 = self.target(x1_target), self.target(x2)
        return 0.5 * (byol_loss(p1, z2, reduction="none") + byol_loss(p2, z1, reduction="none"))
