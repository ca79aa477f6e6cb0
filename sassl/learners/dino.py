"""DINO (Caron et al. 2021): self-distillation with no labels. A student (backbone + DINOHead) is trained to
predict, for each view, the teacher's distribution over `proj_dim` prototypes on the other views; the teacher
is the student's exponential moving average (MomentumTwoTower's target tower), its outputs centred (a running
mean of its batches, `center_momentum`) and sharpened (teacher temperature, warmed up over the first epochs)."""
from __future__ import annotations

import torch
import torch.nn as nn

from sassl import dist
from sassl.learners.heads import DINOHead
from sassl.learners.losses import dino_loss
from sassl.learners.momentum import MomentumTwoTower


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """DINO's schedule: linear from warmup_temp at epoch 0 to temp at epoch warmup_epochs - 1 (np.linspace over
    the warm-up epochs), then temp."""
    if epoch >= warmup_epochs:
        return temp
    return warmup_temp + (temp - warmup_temp) * epoch / max(1, warmup_epochs - 1)


def multi_crop(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """DINO's MultiCropWrapper: the backbone once on each run of same-sized views concatenated (BatchNorm's
    statistics over those crops together), the head once on every view's features (its prototypes normalised
    once, not once a view). views: V tensors (B, 3, H_v, W_v), the same sizes next to each other -> (V, B, K)."""
    feats, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        feats.append(backbone(torch.cat(views[start:end])))
        start = end
    return head(torch.cat(feats)).unflatten(0, (len(views), len(views[0])))


class DINO(MomentumTwoTower):
    MULTI_CROP = True  # takes local crops (--local-crops): forward's `local`, passed on to loss

    def __init__(self, backbone: nn.Module, feat_dim: int, *, proj_hidden: int, proj_dim: int, bottleneck: int,
                 student_temp: float, teacher_temp: float, warmup_teacher_temp: float,
                 warmup_teacher_temp_epochs: int, center_momentum: float, clip_grad: float, freeze_last_layer: int):
        """Settings: sassl.learners.LEARNERS['dino']. proj_dim: the prototypes (DINO's out_dim)."""
        super().__init__(backbone, feat_dim, proj_hidden, proj_dim, proj_hidden, predictor=False,
                         projector=DINOHead(feat_dim, proj_hidden, bottleneck, proj_dim))
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.temps = (warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs)
        self.teacher_temp = warmup_teacher_temp if warmup_teacher_temp_epochs > 0 else teacher_temp
        self.register_buffer("center", torch.zeros(proj_dim))  # checkpointed with the model: a resume keeps it
        self.clip_grad, self.freeze_last_layer, self.epoch = clip_grad, freeze_last_layer, 0

    def set_epoch(self, epoch: int) -> None:
        """The teacher temperature of `epoch` (the trainer calls it before each step)."""
        self.epoch, self.teacher_temp = epoch, teacher_temperature(epoch, *self.temps)

    @torch.no_grad()
    def adjust_gradients(self) -> None:
        """DINO's two rules between backward and the optimiser step (the trainer calls it): each parameter's
        gradient scaled down to norm clip_grad where it is larger (its clip_gradients), and no gradient for the
        prototypes in the first freeze_last_layer epochs (its cancel_gradients_last_layer)."""
        for p in self.parameters():
            if p.grad is not None and self.clip_grad > 0:
                coef = self.clip_grad / (p.grad.norm() + 1e-6)
                p.grad.mul_(coef.clamp(max=1.0))
        if self.epoch < self.freeze_last_layer:
            self.projector.prototypes.weight.grad = None

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """center = m * center + (1 - m) * the mean teacher output over every view, image and rank.
        teacher: (Vt, B, K)."""
        total = teacher.float().sum(dim=(0, 1))
        count = torch.tensor(float(teacher.shape[0] * teacher.shape[1]), device=total.device)
        if dist.is_dist():
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, x1_target: torch.Tensor,
             local: list[torch.Tensor] = ()) -> torch.Tensor:
        """Per image (B,): the student's views (two global, then the local ones) against the teacher's two global
        views, every pair but a view with itself, with the center as it was before this batch; then the center
        moves. Each tower runs as DINO's MultiCropWrapper (multi_crop)."""
        student = multi_crop(self.backbone, self.projector, [x1, x2, *local])
        with torch.no_grad():
            teacher = multi_crop(self.target_backbone, self.target_projector, [x1_target, x2])
        per_image = dino_loss(student, teacher, self.center, self.student_temp, self.teacher_temp, reduction="none")
        if self.training:
            self.update_center(teacher)
        return per_image
