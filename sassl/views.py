"""BYOL's asymmetric two-view pipeline, batched on the training device, with SASSL slotted after the crop.

The data loader only decodes and crops (`TwoCrops`: two random resized crops per image, seeded by
(seed, epoch, index) so a resumed run sees the same crops). Everything else runs on whole batches:

    view 1: crop -> [SASSL] -> flip -> colour jitter -> grayscale -> blur (p=1.0) -> solarize (p=0.0)
    view 2: crop ->            flip -> colour jitter -> grayscale -> blur (p=0.1) -> solarize (p=0.2)

Every random parameter is drawn per image (on the CPU, from a generator seeded per step) and returned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from sassl.data.decode import to_tensor
from sassl.data.registry import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- loader side: crops

def sample_crop(w: int, h: int, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (left, top, width, height): area ~ U(scale), log-uniform ratio."""
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=g).item())
        r = math.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand((), generator=g).item())
        cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            return left, top, cw, ch
    side = min(w, h)  # fallback: centre crop
    return (w - side) // 2, (h - side) // 2, side, side


def random_resized_crop(img: Image.Image, size: int, g: torch.Generator, scale=(0.08, 1.0)) -> torch.Tensor:
    """One random resized crop (area `scale`, aspect 3/4-4/3) of a PIL image as (3, size, size) in [0, 1]."""
    left, top, cw, ch = sample_crop(img.width, img.height, g, scale)
    return to_tensor(img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch)))


class TwoCrops(torch.utils.data.Dataset):
    """(crop1, crop2, label): two random resized crops (3, size, size) in [0, 1] of one image."""

    def __init__(self, dataset: Dataset, size: int, seed: int = 0, scale=(0.08, 1.0)):
        self.dataset, self.size, self.seed, self.scale, self.epoch = dataset, size, seed, scale, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        j, img = self.dataset.usable(i)
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & ((1 << 62) - 1))
        crop = random_resized_crop
        return crop(img, self.size, g, self.scale), crop(img, self.size, g, self.scale), self.dataset.labels[j]


# ----------------------------------------------------------------------------- batched colour ops

def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f[:, None, None, None]).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return ((x - m) * f[:, None, None, None] + m).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    g = _gray(x)
    return ((x - g) * f[:, None, None, None] + g).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # the six hue sectors' (r, g, b), then pick sector i per pixel
    table = torch.stack([torch.stack(c, dim=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table.gather(0, i[None, :, None].expand(1, -1, 3, -1, -1))[0]


def adjust_hue(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Rotate hue by h (N,) in [-0.5, 0.5] turns."""
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([((hsv[:, :1] + h[:, None, None, None]) % 1.0), hsv[:, 1:]], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-image sigma (N,), separable, reflect padding (grouped conv over N*C channels)."""
    n, c, h, w = x.shape
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x)[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


# ----------------------------------------------------------------------------- the view pipeline

@dataclass(frozen=True)
class ViewConfig:
    """BYOL's parameters (docs/DESIGN.md §2.1); blur/solarize probabilities per view (left, right)."""

    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # NOTE: BYOL's sigma range is in pixels of a 224-px crop; we scale it to the crop size (a 64-px crop
    # gets 0.03-0.57 px), as the kernel (10% of the side) already is (docs/DESIGN.md §2.3; the measured
    # effect is in docs/RESULTS.md). 0: use blur_sigma as given.
    blur_reference_size: int = 224
    solarize_p: tuple[float, float] = (0.0, 0.2)


@dataclass
class ViewParams:
    """Per-image draws for one view: flip, jitter (apply, factors (N, 4), order (N, 4)), gray, blur, sigma, solarize."""

    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    sassl: object = None


class TwoViews(nn.Module):
    """(crop1, crop2) in [0, 1] -> (view1, view2) normalised for the backbone, plus the sampled params.

    `sassl`: an optional SASSL op applied to view 1 right after the crop (None = default views)."""

    def __init__(self, cfg: ViewConfig = ViewConfig(), sassl: nn.Module | None = None, normalize: bool = True):
        super().__init__()
        self.cfg, self.sassl, self.normalize = cfg, sassl, normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None], persistent=False)

    def sample(self, n: int, view: int, g: torch.Generator) -> ViewParams:
        c = self.cfg

        def u(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(*(shape or (n,)), generator=g)

        factors = torch.stack([u(max(0, 1 - c.brightness), 1 + c.brightness), u(max(0, 1 - c.contrast), 1 + c.contrast),
                               u(max(0, 1 - c.saturation), 1 + c.saturation), u(-c.hue, c.hue)], dim=1)
        return ViewParams(flip=torch.rand(n, generator=g) < c.flip_p, jitter=torch.rand(n, generator=g) < c.jitter_p,
                          factors=factors, order=torch.argsort(torch.rand(n, 4, generator=g), dim=1),
                          gray=torch.rand(n, generator=g) < c.gray_p, blur=torch.rand(n, generator=g) < c.blur_p[view],
                          sigma=u(*c.blur_sigma), solarize=torch.rand(n, generator=g) < c.solarize_p[view])

    def apply(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        dev = x.device
        x = torch.where(p.flip.to(dev)[:, None, None, None], x.flip(-1), x)
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for pos in range(4):  # colour jitter in a random order per image, as torchvision's ColorJitter
            for op_i, op in enumerate(ops):
                sel = (p.jitter & (p.order[:, pos] == op_i)).nonzero().squeeze(1).to(dev)
                if len(sel):
                    x = x.index_copy(0, sel, op(x[sel], p.factors[sel.cpu(), op_i].to(dev, x.dtype)))
        x = torch.where(p.gray.to(dev)[:, None, None, None], _gray(x).expand_as(x), x)
        sel = p.blur.nonzero().squeeze(1).to(dev)
        if len(sel):
            k = max(3, int(0.1 * x.shape[-1]) | 1)
            scale = x.shape[-1] / self.cfg.blur_reference_size if self.cfg.blur_reference_size else 1.0
            x = x.index_copy(0, sel, gaussian_blur(x[sel], p.sigma[sel.cpu()].to(dev) * scale, k))
        x = torch.where(p.solarize.to(dev)[:, None, None, None] & (x >= 0.5), 1 - x, x)
        return (x - self.mean) / self.std if self.normalize else x

    @torch.no_grad()
    def forward(self, crop1: torch.Tensor, crop2: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[ViewParams]]:
        n = len(crop1)
        sassl_params = None
        if self.sassl is not None:
            crop1, sassl_params = self.sassl(crop1, generator=g)
        p1, p2 = self.sample(n, 0, g), self.sample(n, 1, g)
        p1.sassl = sassl_params
        return self.apply(crop1, p1), self.apply(crop2, p2), [p1, p2]
