"""MoCo v3 (Chen, Xie & He 2021): symmetric InfoNCE between the online tower's predictions and the momentum
tower's keys of the other view (all ranks' keys as negatives, no queue), loss scaled by 2T as in its code.
Heads as in its code: a 3-layer projector for a ViT (2 for a ResNet) and a 2-layer predictor, BN after every
layer (the last one affine-free; the ResNet predictor ends without it). A ViT becomes MoCo v3's own
(`mocov3_vit_`): fixed 2D sin-cos position embedding, its init, and the patch projection frozen at its random
init, MoCo v3's fix for training instability."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl.backbones import ViT, mocov3_vit_
from sassl.dist import gather_nograd, rank
from sassl.learners.heads import mlp
from sassl.learners.losses import info_nce
from sassl.learners.momentum import MomentumTwoTower


def mocov3_loss(q: torch.Tensor, k_all: torch.Tensor, temperature: float, rank: int = 0,
                reduction: str = "mean") -> torch.Tensor:
    """MoCo v3's contrastive loss of one direction: 2T * InfoNCE(q, k) at temperature T. q: (B, D) local
    predictions; k_all: (B * world, D) keys of every rank; the positive of q[i] is k_all[i + rank * B].
    reduction='none': each query's (B,)."""
    return info_nce(q, k_all, temperature, rank=rank, reduction=reduction) * (2 * temperature)


class MoCoV3(MomentumTwoTower):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, pred_hidden: int,
                 temperature: float):
        """Settings: sassl.learners.LEARNERS['mocov3']."""
        vit = isinstance(backbone, ViT)
        if vit:
            mocov3_vit_(backbone)
        super().__init__(backbone, feat_dim, proj_hidden, proj_dim, pred_hidden,
                         projector=mlp(feat_dim, proj_hidden, proj_dim, last_bn=True, num_layers=3 if vit else 2),
                         predictor_module=mlp(proj_dim, pred_hidden, proj_dim, last_bn=vit))
        self.temperature = temperature

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, x1_target: torch.Tensor) -> torch.Tensor:
        """Per image (B,): ctr(q1, k2) + ctr(q2, k1), summed as in MoCo v3's code (each direction scaled by 2T)."""
        q1, q2 = self.online(x1), self.online(x2)
        k1_all, k2_all = gather_nograd(self.target(x1_target)), gather_nograd(self.target(x2))
        return (mocov3_loss(q1, k2_all, self.temperature, rank(), reduction="none") +
                mocov3_loss(q2, k1_all, self.temperature, rank(), reduction="none"))
