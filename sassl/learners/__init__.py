"""Learners by name. Each takes (backbone, feat_dim, **settings) and has forward(x1, x2, momentum) -> (loss, logs)
with logs as detached tensors."""
from __future__ import annotations

import torch.nn as nn

from sassl.backbones import create_backbone
from sassl.learners.byol import BYOL
from sassl.learners.mocov2 import MoCoV2
from sassl.learners.mocov3 import MoCoV3
from sassl.learners.momentum import MomentumTwoTower, cosine_momentum
from sassl.learners.simclr import SimCLR


# name -> (class, its preset settings); each class declares the settings it takes in SETTINGS
LEARNERS: dict[str, tuple[type[nn.Module], dict]] = {
    "mocov2": (MoCoV2, {}),                                                          # the SASSL paper's: no queue, predictor, T = 0.1
    "mocov2-queue": (MoCoV2, {"predictor": False, "queue_size": 16384, "temperature": 0.2}),  # classic MoCo v2
    "simclr": (SimCLR, {}),
    "byol": (BYOL, {}),
    "mocov3": (MoCoV3, {}),
}


def create_learner(name: str, backbone: str = "resnet18", small_images: bool = True, image_size: int = 224,
                   **settings) -> nn.Module:
    """A learner by name with the settings its class declares (SETTINGS); settings it does not take, or
    given as None, are left out, so callers pass one dict for every learner. Unknown names raise.
    `image_size`: the crop size (a ViT's position embedding is learnt at it)."""
    if name not in LEARNERS:
        raise KeyError(f"unknown learner {name!r}; available: {', '.join(LEARNERS)}")
    cls, preset = LEARNERS[name]
    bb, dim = create_backbone(backbone, small_images, image_size)
    return cls(bb, dim, **(preset | {k: v for k, v in settings.items() if k in cls.SETTINGS and v is not None}))


__all__ = ["BYOL", "LEARNERS", "MoCoV2", "MoCoV3", "MomentumTwoTower", "SimCLR", "cosine_momentum", "create_learner"]
