"""Momentum, in one file: the target tower's frozen copy, its exponential moving average (update_momentum),
BYOL's cosine schedule of the momentum (cosine_momentum), and the two-tower learner shared by MoCo v2, BYOL
and MoCo v3: an online tower (backbone -> projector -> predictor) and a target tower (copies of backbone and
projector) that follows it, in one visible place: `update_target`, run at the start of each step (by the
trainer, outside the DDP-wrapped forward)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from sassl.learners.heads import mlp


def cosine_momentum(step: int, total_steps: int, base: float = 0.99) -> float:
    """BYOL's schedule: base at step 0, rising on a cosine to 1.0 at the last step."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2


def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """target = m * target + (1 - m) * online, parameters and buffers (BN statistics copied)."""
    for po, pt in zip(online.parameters(), target.parameters()):
        pt.mul_(m).add_(po.detach(), alpha=1 - m)
    for bo, bt in zip(online.buffers(), target.buffers()):
        bt.copy_(bo)


update_momentum = torch.no_grad()(update_momentum)  # NOTE: not a decorator, so that mutation testing reaches the body


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters take no gradient (the target tower)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class MomentumTwoTower(nn.Module):
    """Subclasses implement `loss(x1, x2, x1_target) -> (B,)`, each image's loss (the target tower sees
    x1_target in place of x1); forward(x1, x2, momentum, x1_target=None) updates the target with `momentum` (None:
    leaves it), then returns (the mean loss, logs) with logs as tensors (the trainer reads them once per step)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, proj_hidden: int, proj_dim: int, pred_hidden: int,
                 predictor: bool = True, projector: nn.Module | None = None, predictor_module: nn.Module | None = None):
        """Heads: BYOL's 2-layer MLPs (feat_dim -> proj_hidden -> proj_dim, then proj_dim -> pred_hidden ->
        proj_dim), no predictor with predictor=False; or the given `projector` / `predictor_module`."""
        super().__init__()
        self.backbone = backbone
        self.projector = projector if projector is not None else mlp(feat_dim, proj_hidden, proj_dim)
        self.predictor = predictor_module if predictor_module is not None else \
            mlp(proj_dim, pred_hidden, proj_dim) if predictor else nn.Identity()
        self.target_backbone, self.target_projector = frozen_copy(self.backbone), frozen_copy(self.projector)

    # the trainer calls this itself, outside DDP's and torch.compile's forward, with a Python float: inside
    # DDP's forward a tensor momentum would be moved to the GPU and read back (a host sync every step), and
    # under compile a changing float would recompile; forward(momentum=...) is for direct use
    @torch.compiler.disable
    @torch.no_grad()
    def update_target(self, momentum: float | torch.Tensor) -> None:
        """target = momentum * target + (1 - momentum) * online (BN statistics copied)."""
        momentum = float(momentum)
        update_momentum(self.backbone, self.target_backbone, momentum)
        update_momentum(self.projector, self.target_projector, momentum)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, proj_dim): predictor(projector(backbone(x)))."""
        return self.predictor(self.projector(self.backbone(x)))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, proj_dim): the target tower's projection (no gradient)."""
        return self.target_projector(self.target_backbone(x))

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, x1_target: torch.Tensor) -> torch.Tensor:
        """The symmetric loss; the online tower sees x1 and x2, the target tower x1_target and x2."""
        raise NotImplementedError

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float | torch.Tensor | None,
                x1_target: torch.Tensor | None = None, local: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict]:
        """x1, x2: (B, 3, H, W) the two views -> (loss, logs): loss is the mean of `loss`'s per-image values;
        logs {"loss", "per_image" (B,)} detached. momentum None leaves the target where it is (the later
        micro-batches of an accumulated step). x1_target: what the target tower sees in place of x1 (view 1
        without SASSL, for sassl_towers='online'); None: x1. `local`: multi-crop's local views, passed on to
        `loss` for learners that take them (MULTI_CROP)."""
        if momentum is not None:
            self.update_target(momentum)
        per_image = self.loss(x1, x2, x1 if x1_target is None else x1_target, *(() if local is None else (local,)))
        loss = per_image.mean()
        return loss, {"loss": loss.detach(), "per_image": per_image.detach()}
