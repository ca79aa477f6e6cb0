"""Backbones as feature extractors (N, 3, H, W) -> (N, D), random init: torchvision's ResNets (with a
small-image stem option), ResNet-50 at 2x and 4x width as in SimCLR, torchvision's ViT (with MoCo v3's
position embedding and init, `mocov3_vit_`), and any timm model by name (`timm:NAME`)."""
from __future__ import annotations

import math
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


def sincos_position_embedding(rows: int, cols: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(1, 1 + rows * cols, dim): MoCo v3's fixed 2D sin-cos position embedding (its
    `build_2d_sincos_position_embedding`): zeros for the class token; for the patch at (r, c), tokens in
    row-major order, [sin(r w), cos(r w), sin(c w), cos(c w)] with w_k = temperature ** (-k / (dim / 4)),
    k < dim / 4. (MoCo v3 builds its grid with meshgrid(w, h), so its first half encodes the row index too.)"""
    if dim % 4:
        raise ValueError(f"the 2D sin-cos position embedding needs a width divisible by 4, not {dim}")
    omega = temperature ** -(torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij")
    out_r, out_c = r.reshape(-1, 1) * omega, c.reshape(-1, 1) * omega
    grid = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), grid])[None]


@torch.no_grad()
def mocov3_vit_(vit: ViT) -> ViT:
    """Make `vit` MoCo v3's ViT in place (its vits.py): the fixed 2D sin-cos position embedding (a parameter
    that is not trained, so checkpoints keep torchvision's names), Xavier-uniform weights and zero biases for
    every linear layer (Q, K and V each as its own matrix), the class token ~ N(0, 1e-6^2), and the patch
    projection Xavier-uniform and frozen (its section 4.2: a frozen random patch projection stabilises
    training). torchvision's ViT is otherwise MoCo v3's (pre-norm blocks, LayerNorm eps 1e-6, GELU MLP, QKV
    bias, the class token's final feature)."""
    side = vit.image_size // vit.patch_size
    vit.encoder.pos_embedding.copy_(sincos_position_embedding(side, side, vit.hidden_dim))
    vit.encoder.pos_embedding.requires_grad_(False)
    for m in vit.encoder.modules():
        if isinstance(m, nn.MultiheadAttention):
            val = math.sqrt(6.0 / (m.in_proj_weight.shape[0] // 3 + m.in_proj_weight.shape[1]))
            nn.init.uniform_(m.in_proj_weight, -val, val)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.Linear):  # the attention's output projection and the MLPs
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(vit.class_token, std=1e-6)
    val = math.sqrt(6.0 / (3 * vit.patch_size ** 2 + vit.hidden_dim))
    nn.init.uniform_(vit.conv_proj.weight, -val, val)
    nn.init.zeros_(vit.conv_proj.bias)
    vit.conv_proj.requires_grad_(False)
    return vit


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


TIMM = "timm:"  # backbone names timm:NAME (any timm.list_models() name), timm:NAME@pretrained for its weights
PRETRAINED = "@pretrained"


def is_vit(name: str) -> bool:
    return name.startswith("vit_")


def is_timm(name: str) -> bool:
    return name.startswith(TIMM)


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError("backbone timm:NAME needs timm: pip install 'sassl[timm]' (or pip install timm)") from None
    return timm


def check_timm(name: str, small_images: bool) -> None:
    """timm:NAME[@pretrained]: timm installed, NAME one of timm.list_models() (else KeyError with the closest
    names), and no small-image stem (timm's models keep their own)."""
    import difflib

    model = name[len(TIMM):].removesuffix(PRETRAINED)
    known = _timm().list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=5, cutoff=0.6)
        raise KeyError(f"unknown backbone {name!r}: {model!r} is not a timm model"
                       + (f"; close: {', '.join(close)}" if close else "") + " (timm.list_models() lists them)")
    if small_images:
        raise ValueError(f"small_images: {name} keeps timm's own stem (the small-image stem applies to our ResNets); "
                         "set it false")


def timm_backbone(name: str, image_size: int) -> tuple[nn.Module, int]:
    """(timm model without its classifier: (N, 3, H, W) -> (N, num_features) pooled features, num_features).
    Models that take an input size (ViTs and their kin) are built for `image_size` with dynamic sizes allowed
    (the position embedding interpolated, as our ViT does). timm:NAME@pretrained loads timm's weights, which
    come from the Hugging Face Hub: without a network that fails, and says so."""
    timm, model = _timm(), name[len(TIMM):].removesuffix(PRETRAINED)
    pretrained = name.endswith(PRETRAINED)
    try:
        net = timm.create_model(model, pretrained=pretrained, num_classes=0, img_size=image_size, dynamic_img_size=True)
    except TypeError:  # a model without an input size (ResNets, ConvNeXts, ...)
        net = None
    except Exception as e:  # noqa: BLE001 (the Hub's own errors: no network, no such weights)
        raise ValueError(_no_weights(name, e)) from None
    sized = net is not None
    if net is None:
        try:
            net = timm.create_model(model, pretrained=pretrained, num_classes=0)
        except Exception as e:  # noqa: BLE001
            raise ValueError(_no_weights(name, e)) from None
    net.sassl_img_size = image_size if sized else None  # what `sassl export --format timm` passes timm back
    return net, int(net.num_features)


def _no_weights(name: str, e: Exception) -> str:
    return (f"backbone {name}: timm could not load its pre-trained weights ({type(e).__name__}: {str(e)[:200]}); "
            f"they download from the Hugging Face Hub, which needs a network (HF_HUB_OFFLINE unset) or a filled "
            f"cache. Drop {PRETRAINED} to start from random init, as self-supervised pre-training does")


def check_backbone(name: str, small_images: bool, image_size: int) -> None:
    """The one check of a backbone setting (run configs check it before any data is loaded): a known name
    (else KeyError, as for every registry name), no small-image stem for a ViT or a timm model, crops a whole
    number of ViT patches (else ValueError naming the setting)."""
    if is_timm(name):
        return check_timm(name, small_images)
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}, or timm:NAME for any timm "
                       "model")
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
    if is_timm(name):
        return timm_backbone(name, image_size)
    ctor, dim = BACKBONES[name]
    if is_vit(name):
        return ctor(image_size=image_size), dim
    net = ctor(image_size)
    if small_images:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, dim
