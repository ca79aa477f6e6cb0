"""Barlow Twins (Zbontar et al. 2021): one encoder + a 3-layer projector, the cross-correlation of the two views'
standardised embeddings pulled to the identity."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl import dist
from sassl.learners.heads import mlp
from sassl.learners.losses import barlow_twins_loss


class BarlowTwins(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, lambd: float):
        """Settings: sassl.learners.LEARNERS['barlowtwins']."""
        super().__init__()
        self.backbone, self.projector = backbone, mlp(feat_dim, proj_hidden, proj_dim, num_layers=3)
        self.lambd = lambd

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float | None = None,
                x1_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """x1, x2: (B, 3, H, W) -> (loss, logs). One tower: no momentum, no x1_target. NOTE: the loss is a
        statistic of the whole batch, so `per_image` (the augmentation record's column) is the batch's loss plus
        each image's departure from the mean of its invariance term (the squared distance of its two
        standardised embeddings): its mean is the loss, its spread says which images' views disagree. Under
        torch.distributed the loss is the global batch's on every rank (the same value as one process).
        NOTE: lightly's BarlowTwinsLoss(gather_distributed=True) standardises each rank's rows with that rank's
        statistics and averages the ranks' c; the paper's code (and ours) standardises with the global batch."""
        if x1_target is not None:
            raise ValueError("Barlow Twins has one tower: x1_target (sassl_towers='online') does not apply")
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        # the global batch on every rank (gradients flow back to each rank's rows): standardised with its
        # statistics and correlated whole, as the paper's code (SyncBN'd, c summed over GPUs) does
        z1_all, z2_all = dist.gather(z1), dist.gather(z2)
        loss = barlow_twins_loss(z1_all, z2_all, self.lambd)
        with torch.no_grad():
            z1n, z2n = (torch.nn.functional.batch_norm(z.float(), None, None, training=True) for z in (z1_all, z2_all))
            inv = (z1n - z2n).pow(2).sum(dim=1)
            mine = inv[dist.rank() * len(z1):(dist.rank() + 1) * len(z1)]
            per_image = mine - inv.mean() + loss.detach()
        return loss, {"loss": loss.detach(), "per_image": per_image}
