"""BYOL (Grill et al. 2020): online encoder + projector + predictor regress the momentum target's
projection of the other view; symmetric loss."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl.learners.heads import frozen_copy, mlp, update_momentum
from sassl.learners.losses import byol_loss


class BYOL(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, proj_hidden: int = 4096, proj_dim: int = 256,
                 pred_hidden: int = 4096):
        super().__init__()
        self.backbone, self.projector = backbone, mlp(feat_dim, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim)
        self.target_backbone, self.target_projector = frozen_copy(self.backbone), frozen_copy(self.projector)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float) -> tuple[torch.Tensor, dict]:
        update_momentum(self.backbone, self.target_backbone, momentum)
        update_momentum(self.projector, self.target_projector, momentum)
        p1, p2 = (self.predictor(self.projector(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            z1, z2 = (self.target_projector(self.target_backbone(x)) for x in (x1, x2))
        loss = 0.5 * (byol_loss(p1, z2) + byol_loss(p2, z1))
        return loss, {"loss": loss.item()}
