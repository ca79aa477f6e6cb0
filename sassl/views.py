"""The two-view pipelines (BYOL's asymmetric one by default; SimCLR's, classic MoCo v2's and MoCo v3's in
VIEWS), batched on the training device, with SASSL slotted after the crop.

The data loader only decodes and crops (sassl.data.loader: two random resized crops per image, uint8,
seeded by (seed, epoch, index) so a resumed run sees the same crops). Everything else runs on whole batches:

    view 1: crop -> [SASSL] -> flip -> colour jitter -> grayscale -> blur (p=1.0) -> solarize (p=0.0)
    view 2: crop ->            flip -> colour jitter -> grayscale -> blur (p=0.1) -> solarize (p=0.2)

Every random parameter is drawn per image (on the CPU, from a generator seeded per step) and returned.
`prepare` makes every draw and runs SASSL; `finish` applies the rest. The step never waits for the
device: indices and factors are computed on the CPU and reach the device in one transfer (sassl.devices.ship).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.devices import pad_rows, shape_bucket, ship

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> ImageNet-normalised, channels-last (what a backbone takes), on x's device."""
    m = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype)[None, :, None, None]
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


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


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # factors' column order


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
    # DINO's local crops (multi-crop): blur with p 0.5, no solarisation; the other ops as the global views'
    local_blur_p: float = 0.5
    local_solarize_p: float = 0.0


# Each method's own view set (--views NAME; each learner's default is in sassl.learners.LEARNERS).
VIEWS: dict[str, ViewConfig] = {
    "byol": ViewConfig(),  # Grill et al. 2020, table 6; SASSL's MoCo v2 uses it (A.3)
    # SimCLR (Chen et al. 2020, appendix A): colour distortion of strength 1 (0.8, 0.8, 0.8, 0.2) with p 0.8,
    # grayscale 0.2, blur with p 0.5 on both views, no solarisation
    "simclr": ViewConfig(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=(0.5, 0.5), solarize_p=(0.0, 0.0)),
    # classic MoCo v2 (Chen et al. 2020, its code): jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur 0.5
    "mocov2": ViewConfig(saturation=0.4, blur_p=(0.5, 0.5), solarize_p=(0.0, 0.0)),
    # MoCo v3 (Chen et al. 2021, its code): BYOL's set (blur 1.0 / 0.1, solarize 0 / 0.2)
    "mocov3": ViewConfig(),
}


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

    def head(self, n: int) -> "ViewParams":
        """The draws of the first n images (to replay the ops on part of a batch; `sassl` is kept whole)."""
        return replace(self, **{f.name: getattr(self, f.name)[:n] for f in fields(self) if f.name != "sassl"})


@dataclass
class Prepared:
    """A batch with all its draws made and SASSL applied (crop1 stylized), waiting for the other view ops.
    clean1: crop1 before SASSL, kept only when the target tower must not see the stylized view (towers='online')."""

    crop1: torch.Tensor
    crop2: torch.Tensor
    p1: ViewParams
    p2: ViewParams
    clean1: torch.Tensor | None = None
    local: list[torch.Tensor] = field(default_factory=list)  # multi-crop: each small crop (B, 3, s, s) of the batch
    pl: list[ViewParams] = field(default_factory=list)  # and its draws


# Which towers of a momentum learner see view 1 stylized. 'both': view 1 is stylized before the learner sees it,
# so in the symmetric loss it feeds the online tower (against the target's view 2) and the target tower
# (against the online view 2). 'online': the target tower gets view 1 without SASSL (same crop, same other ops).
# NOTE: the paper stylizes "the left view"; in its symmetrised loss that view meets both towers, and SASSL
# is a step of the input pipeline that builds the view (BYOL's code, which the paper's extends, makes the
# views before the learner runs), so 'both' is the reading we argue for and the default. 'online' is the
# other reading (the left view is BYOL's online input), kept as a setting.
TOWERS = ("both", "online")
# Which crops SASSL stylizes: global1 (the first global view: the paper's "one view"), global (both global views),
# all (every global and local crop). NOTE: the paper has two views and stylizes one; with DINO's multi-crop the
# local crops are the student's alone, and whether styles belong there is the question this setting asks.
SASSL_CROPS = ("global1", "global", "all")


class TwoViews(nn.Module):
    """(crop1, crop2) in [0, 1] -> (view1, view2) normalised for the backbone, plus the sampled params.

    `sassl`: an optional SASSL op applied to view 1 right after the crop (None = default views); `towers`:
    which towers see view 1 stylized (TOWERS; 'online' also keeps the clean view 1 for the target tower); `crops`:
    which crops it stylizes (SASSL_CROPS). Local crops (multi-crop) get DINO's local ops."""

    def __init__(self, cfg: ViewConfig = ViewConfig(), sassl: nn.Module | None = None, normalize: bool = True,
                 towers: str = "both", crops: str = "global1"):
        super().__init__()
        if towers not in TOWERS:
            raise ValueError(f"sassl_towers: expected one of {', '.join(TOWERS)}, got {towers!r}")
        if crops not in SASSL_CROPS:
            raise ValueError(f"sassl_crops: expected one of {', '.join(SASSL_CROPS)}, got {crops!r}")
        self.cfg, self.sassl, self.normalize, self.towers, self.crops = cfg, sassl, normalize, towers, crops
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
                          gray=torch.rand(n, generator=g) < c.gray_p,
                          blur=torch.rand(n, generator=g) < (c.blur_p[view] if view < 2 else c.local_blur_p),
                          sigma=u(*c.blur_sigma),
                          solarize=torch.rand(n, generator=g) < (c.solarize_p[view] if view < 2 else c.local_solarize_p))

    def apply(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """The view's ops with the draws `p` (on the CPU) on a batch x in [0, 1], then the normalisation."""
        jitter = []  # colour jitter in a random order per image, as torchvision's ColorJitter: (op, rows) in order
        for pos in range(4):
            for op_i in range(4):
                rows = (p.jitter & (p.order[:, pos] == op_i)).nonzero().squeeze(1)
                if len(rows):
                    jitter.append((op_i, rows))
        blur = p.blur.nonzero().squeeze(1)
        padded = pad_rows(blur, shape_bucket(x.device))  # few conv shapes for cuDNN to tune (sassl.devices.shape_bucket)
        parts = {"flip": p.flip, "gray": p.gray, "solarize": p.solarize, "blur": padded, "sigma": p.sigma[padded]}
        for k, (op_i, rows) in enumerate(jitter):
            parts[f"rows{k}"], parts[f"factor{k}"] = rows, p.factors[rows, op_i]
        d = ship(parts, x.device)
        x = torch.where(d["flip"][:, None, None, None], x.flip(-1), x)
        for k, (op_i, _) in enumerate(jitter):
            rows = d[f"rows{k}"]
            x = x.index_copy(0, rows, JITTER_OPS[op_i](x[rows], d[f"factor{k}"].to(x.dtype)))
        x = torch.where(d["gray"][:, None, None, None], _gray(x).expand_as(x), x)
        if len(blur):
            k = max(3, int(0.1 * x.shape[-1]) | 1)
            scale = x.shape[-1] / self.cfg.blur_reference_size if self.cfg.blur_reference_size else 1.0
            n = len(blur)
            x = x.index_copy(0, d["blur"][:n], gaussian_blur(x[d["blur"]], d["sigma"] * scale, k)[:n])
        x = torch.where(d["solarize"][:, None, None, None] & (x >= 0.5), 1 - x, x)
        return (x - self.mean) / self.std if self.normalize else x

    @torch.no_grad()
    def prepare(self, crop1: torch.Tensor, crop2: torch.Tensor, g: torch.Generator,
                local: list[torch.Tensor] | None = None) -> Prepared:
        """Every random draw of a batch from `g` (SASSL's first, then each view's, then the local crops') and the
        SASSL op on crop1 (and on crop2 and the local crops, as `crops` says). `local`: multi-crop's small crops,
        each (B, 3, s, s)."""
        n, local = len(crop1), list(local or [])
        sassl_params, clean1 = None, None
        if self.sassl is not None:
            clean1 = crop1 if self.towers == "online" else None
            crop1, sassl_params = self.sassl(crop1, generator=g)
            if self.crops != "global1":
                crop2 = self.sassl(crop2, generator=g)[0]
            if self.crops == "all":
                local = [self.sassl(c, generator=g)[0] for c in local]
        p1, p2 = self.sample(n, 0, g), self.sample(n, 1, g)
        p1.sassl = sassl_params
        return Prepared(crop1, crop2, p1, p2, clean1, local, [self.sample(n, 2, g) for _ in local])

    @torch.no_grad()
    def local_views(self, prep: Prepared) -> list[torch.Tensor]:
        """The prepared local crops -> their views ([] without multi-crop)."""
        return [self.apply(c, p) for c, p in zip(prep.local, prep.pl)]

    @torch.no_grad()
    def finish(self, prep: Prepared) -> tuple[torch.Tensor, torch.Tensor, list[ViewParams]]:
        """The prepared crops -> (view1, view2, [params1, params2])."""
        return self.apply(prep.crop1, prep.p1), self.apply(prep.crop2, prep.p2), [prep.p1, prep.p2]

    @torch.no_grad()
    def target_view(self, prep: Prepared) -> torch.Tensor | None:
        """View 1 without SASSL (same draws) for the target tower when towers='online', else None."""
        return None if prep.clean1 is None else self.apply(prep.clean1, prep.p1)

    def forward(self, crop1: torch.Tensor, crop2: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[ViewParams]]:
        """(crop1, crop2) in [0, 1] -> (view1, view2, [params1, params2]): prepare, then finish."""
        return self.finish(self.prepare(crop1, crop2, g))
