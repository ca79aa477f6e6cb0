"""MoCo v2 as SASSL runs it (A.3): no queue, a BYOL-style predictor on the online tower, momentum
encoder on a cosine schedule, InfoNCE at temperature 0.1 against the other view's keys (all ranks).
`queue_size > 0, predictor=False, temperature=0.2` gives classic MoCo v2 (He et al. / Chen et al.)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.dist import gather_nograd, rank
from sassl.learners.losses import info_nce
from sassl.learners.momentum import MomentumTwoTower


class MoCoV2(MomentumTwoTower):
    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, pred_hidden: int,
                 temperature: float, predictor: bool, queue_size: int):
        """Settings: sassl.learners.LEARNERS ('mocov2', 'mocov2-queue')."""
        super().__init__(backbone, feat_dim, proj_hidden, proj_dim, pred_hidden, predictor)
        self.temperature, self.queue_size = temperature, queue_size
        if queue_size:
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write keys at the queue's pointer (on the device: the host never reads the pointer, no sync)."""
        idx = (torch.arange(len(keys), device=keys.device) + self.queue_ptr) % self.queue_size
        self.queue.index_copy_(0, idx, F.normalize(keys, dim=1).to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % self.queue_size)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, x1_target: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE per image (B,): each view's queries against the other view's keys of all ranks, the
        image's two directions averaged."""
        q1, q2 = self.online(x1), self.online(x2)
        k1_all, k2_all = gather_nograd(self.target(x1_target)), gather_nograd(self.target(x2))
        queue = self.queue.clone() if self.queue_size else None
        loss = 0.5 * (info_nce(q1, k2_all, self.temperature, queue, rank(), reduction="none") +
                      info_nce(q2, k1_all, self.temperature, queue, rank(), reduction="none"))
        if self.queue_size:
            self._enqueue(torch.cat([k1_all, k2_all]))
        return loss
