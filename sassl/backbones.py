"""torchvision ResNets as feature extractors, with a small-image stem option."""
from __future__ import annotations

import torch.nn as nn
import torchvision

BACKBONES = {"resnet18": (torchvision.models.resnet18, 512), "resnet34": (torchvision.models.resnet34, 512),
             "resnet50": (torchvision.models.resnet50, 2048)}


def create_backbone(name: str = "resnet18", small_images: bool = True) -> tuple[nn.Module, int]:
    """(module mapping (N, 3, H, W) -> (N, D), D). `small_images`: 3x3 stride-1 first conv and no max
    pool (the usual CIFAR/96-px stem) instead of ImageNet's 7x7 stride-2 + pool."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    ctor, dim = BACKBONES[name]
    net = ctor(weights=None)
    if small_images:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, dim
