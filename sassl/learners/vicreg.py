"""VICReg (Bardes, Ponce & LeCun 2022): one encoder + a 3-layer expander; invariance between the views, each
dimension's variance kept above 1, covariance between dimensions pushed to 0."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl import dist
from sassl.learners.heads import mlp
from sassl.learners.losses import vicreg_loss


class VICReg(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, sim: float,
                 var: float, cov: float):
        """Settings: sassl.learners.LEARNERS['vicreg']."""
        super().__init__()
        self.backbone, self.projector = backbone, mlp(feat_dim, proj_hidden, proj_dim, num_layers=3)
        self.sim, self.var, self.cov = sim, var, cov

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float | None = None,
                x1_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """x1, x2: (B, 3, H, W) -> (loss, logs). One tower. NOTE: variance and covariance are statistics of the
        whole batch; `per_image` is the batch's loss plus each image's departure from the mean of its invariance
        term (sim x the mean squared distance of its two embeddings): its mean is the loss. Under
        torch.distributed the variance and covariance are the gathered global batch's (as the paper's code and
        lightly's gather_distributed), and so is the invariance (lightly's is each rank's own: the same mean)."""
        if x1_target is not None:
            raise ValueError("VICReg has one tower: x1_target (sassl_towers='online') does not apply")
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        # the global batch on every rank (gradients flow back to each rank's rows), as the paper's code gathers
        loss = vicreg_loss(dist.gather(z1), dist.gather(z2), self.sim, self.var, self.cov)
        inv = self.sim * (z1.detach().float() - z2.detach().float()).pow(2).mean(dim=1)
        return loss, {"loss": loss.detach(), "per_image": inv - inv.mean() + loss.detach()}
