"""SimCLR (Chen et al. 2020): one encoder + projector, NT-Xent over both views of the global batch."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl.dist import gather, rank
from sassl.learners.heads import mlp
from sassl.learners.losses import nt_xent


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, temperature: float):
        """Settings: sassl.learners.LEARNERS['simclr']."""
        super().__init__()
        self.backbone, self.projector = backbone, mlp(feat_dim, proj_hidden, proj_dim)
        self.temperature = temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float | None = None,
                x1_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """x1, x2: (B, 3, H, W) -> (loss, logs). `momentum` is unused (uniform learner signature); one tower,
        so no x1_target (sassl_towers='online' is refused for SimCLR)."""
        if x1_target is not None:
            raise ValueError("SimCLR has one tower: x1_target (sassl_towers='online') does not apply")
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        anchors = nt_xent(z1, z2, self.temperature, gather(z1), gather(z2), rank(), reduction="none")
        per_image = 0.5 * (anchors[:len(z1)] + anchors[len(z1):])  # the image's two views as anchors, averaged
        loss = per_image.mean()
        return loss, {"loss": loss.detach(), "per_image": per_image.detach()}
