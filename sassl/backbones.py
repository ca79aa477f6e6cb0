"""Backbones as feature extractors (N, 3, H, W) -> (N, D), random init: torchvision's ResNets (with a
small-image stem option), ResNet-50 at 2x and 4x width as in SimCLR, and torchvision's ViT."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet


def wide_resnet50(width: int) -> ResNet:
    """ResNet-50 with every width (stem, each stage's bottleneck and output channels) times `width`, as SimCLR's
    ResNet-50 (2x) / (4x): output 2048 * width features, 94 M / 375 M parameters. (torchvision's
    wide_resnet50_2 widens only the bottlenecks' inner convolutions.)"""
    net = ResNet(Bottleneck, [3, 4, 6, 3])  # a 1x net for its _make_layer and settings; its layers are replaced
    net.inplanes = 64 * width
    net.conv1 = nn.Conv2d(3, 64 * width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(64 * width)
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        setattr(net, f"layer{i + 1}", net._make_layer(Bottleneck, planes * width, blocks, stride=1 if i == 0 else 2))
    for m in net.modules():  # torchvision's ResNet init
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class ViT(torchvision.models.VisionTransformer):
    """torchvision's VisionTransformer as a feature extractor: the final class token (N, hidden_dim). Any input
    side that is a multiple of the patch size: the position embedding (learnt at `image_size`) is interpolated
    to the input's patch grid (bicubic), as DINO and timm do, so an encoder pre-trained on 64-px crops can be
    evaluated at another size. Parameter names are torchvision's."""

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int):
        super().__init__(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
        self.heads = nn.Identity()

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1 + rows * cols, D): the class token's embedding, then the patch grid's, interpolated if needed."""
        pos = self.encoder.pos_embedding
        side = self.image_size // self.patch_size
        if (rows, cols) == (side, side):
            return pos
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        torch._assert(h % p == 0 and w % p == 0, f"ViT: input {h}x{w} is not a multiple of the patch size {p}")
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, rows * cols, D)
        tokens = torch.cat([self.class_token.expand(n, -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(h // p, w // p)
        return self.encoder.ln(self.encoder.layers(self.encoder.dropout(tokens)))[:, 0]


# name -> (constructor(image_size) -> module with an `fc` or ViT, feature dimension)
BACKBONES = {
    "resnet18": (lambda _: torchvision.models.resnet18(weights=None), 512),
    "resnet34": (lambda _: torchvision.models.resnet34(weights=None), 512),
    "resnet50": (lambda _: torchvision.models.resnet50(weights=None), 2048),
    "resnet50x2": (lambda _: wide_resnet50(2), 4096),
    "resnet50x4": (lambda _: wide_resnet50(4), 8192),
    # patch size, layers, heads, width, MLP width: DeiT-Ti (the tiny one, for tests and CPUs), ViT-S/16 (as in
    # DeiT and MoCo v3), ViT-B/16 (Dosovitskiy et al.)
    "vit_tiny": (partial(ViT, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768), 192),
    "vit_s_16": (partial(ViT, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536), 384),
    "vit_b_16": (partial(ViT, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072), 768),
}


def is_vit(name: str) -> bool:
    return name.startswith("vit_")


def check_backbone(name: str, small_images: bool, image_size: int) -> None:
    """The one check of a backbone setting (run configs check it before any data is loaded): a known name
    (else KeyError, as for every registry name), no small-image stem for a ViT, crops a whole number of ViT
    patches (else ValueError naming the setting)."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    if is_vit(name):
        if small_images:
            raise ValueError(f"small_images: {name} has no small-image stem (it applies to ResNets); set it false")
        patch = BACKBONES[name][0].keywords["patch_size"]
        if image_size % patch:
            raise ValueError(f"image_size: {image_size} is not a multiple of the ViT patch size {patch}")


def create_backbone(name: str = "resnet18", small_images: bool = True, image_size: int = 224) -> tuple[nn.Module, int]:
    """(module mapping (N, 3, H, W) -> (N, D), D). ResNets: `small_images` gives the 3x3 stride-1 first conv and no
    max pool (the usual CIFAR/96-px stem) instead of ImageNet's 7x7 stride-2 + pool. ViTs: `image_size` is the
    side their position embedding is learnt at (other sizes are interpolated); they have no small-image stem.
    An unknown name raises KeyError, impossible settings ValueError (check_backbone)."""
    check_backbone(name, small_images, image_size)
    ctor, dim = BACKBONES[name]
    if is_vit(name):
        return ctor(image_size=image_size), dim
    net = ctor(image_size)
    if small_images:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, dim
