"""Learners by name, with every learner's hyper-parameters in one table (LEARNERS). Each learner takes
(backbone, feat_dim, **settings) and has forward(x1, x2, momentum) -> (loss, logs) with logs as detached
tensors."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch.nn as nn

from sassl.backbones import create_backbone
from sassl.learners.barlowtwins import BarlowTwins
from sassl.learners.byol import BYOL
from sassl.learners.dino import DINO
from sassl.learners.mocov2 import MoCoV2
from sassl.learners.mocov3 import MoCoV3
from sassl.learners.momentum import MomentumTwoTower, cosine_momentum
from sassl.learners.simclr import SimCLR
from sassl.learners.vicreg import VICReg


@dataclass(frozen=True)
class Learner:
    """A learner's class and its paper's settings. `run`: run settings (PretrainConfig fields: views, heads,
    target momentum, temperature, optimizer) that a run takes from its learner under the settings it is
    given (sassl.recipes.with_recipe); `module`: constructor settings no run config names."""

    cls: type[nn.Module]
    run: dict
    module: dict = field(default_factory=dict)


# The one table of learner hyper-parameters: constructors have no defaults of their own, and PretrainConfig's
# learner fields default to the default learner's row (tests/project/test_layout.py checks both).
LEARNERS: dict[str, Learner] = {
    # SASSL's MoCo v2 (A.3: no queue, BYOL-style predictor, cosine momentum from 0.99, T 0.1, BYOL's views).
    # NOTE: A.3's head sizes were not available to us; BYOL's (4096/256) are the ones its BYOL-style
    # predictor comes from
    "mocov2": Learner(MoCoV2, {"views": "byol", "proj_hidden": 4096, "proj_dim": 256, "ema": 0.99, "temperature": 0.1},
                      {"predictor": True, "queue_size": 0}),
    # classic MoCo v2 (Chen et al. 2020): 2048/128 head, T 0.2, its own views and crop scale, momentum 0.999,
    # a queue of 16384 keys, no predictor
    "mocov2-queue": Learner(MoCoV2, {"views": "mocov2", "crop_scale": (0.2, 1.0), "proj_hidden": 2048, "proj_dim": 128,
                                     "ema": 0.999, "temperature": 0.2}, {"predictor": False, "queue_size": 16384}),
    # SimCLR (Chen et al. 2020): symmetric views (colour strength 1.0, blur 0.5 on both), 2048/128 head, T 0.1
    "simclr": Learner(SimCLR, {"views": "simclr", "proj_hidden": 2048, "proj_dim": 128, "temperature": 0.1}),
    # BYOL (Grill et al. 2020): asymmetric views, 4096/256 heads, target momentum 0.996 -> 1
    "byol": Learner(BYOL, {"views": "byol", "proj_hidden": 4096, "proj_dim": 256, "ema": 0.996}),
    # MoCo v3 (Chen, Xie & He 2021), its ViT settings: BYOL's views, 4096/256 heads (3-layer projector for a
    # ViT), T 0.2, momentum 0.99 -> 1, AdamW with base lr 1.5e-4 per 256 images and weight decay 0.1
    "mocov3": Learner(MoCoV3, {"views": "mocov3", "proj_hidden": 4096, "proj_dim": 256, "ema": 0.99, "temperature": 0.2,
                               "optimizer": "adamw", "lr": 1.5e-4, "weight_decay": 0.1}),
    # Barlow Twins (Zbontar et al. 2021): BYOL's views, a 3-layer 8192-8192-8192 projector, lambda 5e-3 (0.0051 in
    # its code), LARS at base lr 0.2 per 256 images, weight decay 1.5e-6. NOTE: the paper's 8192-wide projector
    # is 4x ResNet-50's 2048 features; at CPU size with ResNet-18 (512) the same ratio is --proj-hidden 2048
    # --proj-dim 2048. Its bias learning rate (0.0048) is not separate here: LARS exempts biases and norms.
    "barlowtwins": Learner(BarlowTwins, {"views": "byol", "proj_hidden": 8192, "proj_dim": 8192, "lr": 0.2,
                                         "weight_decay": 1.5e-6}, {"lambd": 5e-3}),
    # VICReg (Bardes et al. 2022): BYOL's views, a 3-layer 8192-8192-8192 expander, invariance 25, variance 25,
    # covariance 1, LARS at base lr 0.2 per 256 images, weight decay 1e-6 (at CPU size: as Barlow Twins)
    "vicreg": Learner(VICReg, {"views": "byol", "proj_hidden": 8192, "proj_dim": 8192, "lr": 0.2,
                               "weight_decay": 1e-6}, {"sim": 25.0, "var": 25.0, "cov": 1.0}),
    # DINO (Caron et al. 2021): multi-crop, 2 global crops (BYOL's two views, crop scale 0.4-1) and 8 local ones
    # (3/7 of the side: its 96 of 224 px, scale 0.05-0.4, blur 0.5, no solarisation), a 2048-wide 3-layer head to a
    # 256-d code and 65536 prototypes, student T 0.1, teacher T 0.04 -> 0.07 over the first 30 epochs, center
    # momentum 0.9, teacher momentum 0.996 -> 1, AdamW at base lr 5e-4 per 256 images, weight decay 0.04 -> 0.4 on
    # a cosine.
    # Without local crops (--local-crops 0) DINO advises crop scale 0.14-1. Each parameter's gradient is clipped to
    # norm 3 and the prototypes take no gradient in the first epoch, as DINO does. At CPU size --proj-dim cuts
    # the 65536 prototypes (4096: 10x faster)
    "dino": Learner(DINO, {"views": "byol", "crop_scale": (0.4, 1.0), "local_crops": 8, "proj_hidden": 2048,
                           "proj_dim": 65536, "ema": 0.996, "optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.04,
                           "weight_decay_end": 0.4},
                    {"bottleneck": 256, "student_temp": 0.1, "teacher_temp": 0.07, "warmup_teacher_temp": 0.04,
                     "warmup_teacher_temp_epochs": 30, "center_momentum": 0.9, "clip_grad": 3.0, "freeze_last_layer": 1}),
}


def settings_of(cls: type[nn.Module]) -> tuple[str, ...]:
    """The settings a learner's constructor takes (its keyword-only parameters)."""
    return tuple(n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY)


def learner_run_settings(name: str) -> dict:
    """The run settings learner `name` brings (its row's `run`); {} for an unknown name (validation names it)."""
    return dict(LEARNERS[name].run) if isinstance(name, str) and name in LEARNERS else {}


def create_learner(name: str, backbone: str = "resnet18", small_images: bool = True, image_size: int = 224,
                   **settings) -> nn.Module:
    """A learner by name: its row of LEARNERS under the settings given (given as None: the row's). Settings
    its constructor does not take are left out, so callers pass one dict for every learner; the predictor's
    hidden width is the projector's unless given (BYOL, MoCo v3). Unknown names raise.
    `image_size`: the crop size (a ViT's position embedding is learnt at it)."""
    if name not in LEARNERS:
        raise KeyError(f"unknown learner {name!r}; available: {', '.join(LEARNERS)}")
    spec = LEARNERS[name]
    values = spec.run | spec.module | {k: v for k, v in settings.items() if v is not None}
    values.setdefault("pred_hidden", values["proj_hidden"])
    bb, dim = create_backbone(backbone, small_images, image_size)
    takes = settings_of(spec.cls)
    return spec.cls(bb, dim, **{k: v for k, v in values.items() if k in takes})


__all__ = ["BYOL", "DINO", "LEARNERS", "Learner", "MoCoV2", "MoCoV3", "MomentumTwoTower", "SimCLR", "cosine_momentum",
           "create_learner", "learner_run_settings", "settings_of"]
