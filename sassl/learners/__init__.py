"""Learners by name. Each takes (backbone, feat_dim, **head sizes) and has forward(x1, x2, momentum) -> (loss, logs)."""
from __future__ import annotations

import math
from typing import Callable

import torch.nn as nn

from sassl.backbones import create_backbone
from sassl.learners.byol import BYOL
from sassl.learners.mocov2 import MoCoV2
from sassl.learners.simclr import SimCLR


def _mocov2(bb, dim, **kw):
    return MoCoV2(bb, dim, **kw)


def _mocov2_queue(bb, dim, **kw):
    return MoCoV2(bb, dim, **({"predictor": False, "queue_size": 16384, "temperature": 0.2} | kw))


LEARNERS: dict[str, Callable[..., nn.Module]] = {
    "mocov2": _mocov2,              # the SASSL paper's variant: no queue, predictor, T = 0.1
    "mocov2-queue": _mocov2_queue,  # classic MoCo v2: queue, no predictor, T = 0.2
    "simclr": lambda bb, dim, **kw: SimCLR(bb, dim, **kw),
    "byol": lambda bb, dim, **kw: BYOL(bb, dim, **kw),
}


def create_learner(name: str, backbone: str = "resnet18", small_images: bool = True, **head_kwargs) -> nn.Module:
    """A learner by name; unknown names raise listing the available ones."""
    if name not in LEARNERS:
        raise KeyError(f"unknown learner {name!r}; available: {', '.join(LEARNERS)}")
    bb, dim = create_backbone(backbone, small_images)
    return LEARNERS[name](bb, dim, **head_kwargs)


def cosine_momentum(step: int, total_steps: int, base: float = 0.99) -> float:
    """BYOL's schedule: base at step 0, rising on a cosine to 1.0 at the last step."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2


__all__ = ["BYOL", "LEARNERS", "MoCoV2", "SimCLR", "cosine_momentum", "create_learner"]
