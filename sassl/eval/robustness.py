"""Style robustness of a frozen encoder: does it ignore style and keep content? (SASSL's mechanistic claim.)

    style_invariance: mean cosine similarity between f(x) and f(T(x, s)) for held-out test images x and
        held-out styles s, at several pixel blends beta (1 = fully stylized), with a 95% confidence interval
        over images; beside it the same number for a content change (two different images of one class),
        so a reader sees the scale.
    stylized: classifiers fit on clean training features, tested on the test split stylized with held-out
        styles at beta = 1 (in the spirit of Stylized-ImageNet, Geirhos et al. 2019); the drop from clean
        to stylized accuracy is the number to compare.

T(x, s) is the SASSL op with p = 1 and alpha = 1 (the style image's code alone), drawing one held-out style
per image from a generator seeded per batch, so a stylized target reproduces from its seed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sassl.eval.features import EvalImages
from sassl.stylizer import SASSL
from sassl.views import imagenet_normalize


def check_heldout(heldout: str, trained_with: str | None, allow_overlap: bool = False) -> None:
    """Refuse held-out styles that the encoder was trained with (its run config's `style`), unless allowed."""
    if trained_with and not allow_overlap and str(heldout).rstrip("/") == str(trained_with).rstrip("/"):
        raise ValueError(f"heldout_styles: {heldout!r} is the style source this encoder was pre-trained with; "
                         "robustness needs styles it never saw (e.g. textures for a run trained on paintings), or "
                         "pass allow_style_overlap=True to measure it anyway")


def stylize_op(stylizer, bank, beta: float):
    """The SASSL op that fully replaces the style code (p = 1, alpha = 1) and blends pixels at `beta`."""
    return SASSL(stylizer, "bank", bank, p=1.0, alpha=(1.0, 1.0), beta=(beta, beta))


@torch.no_grad()
def embed(backbone: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Backbone features (N, D) float32 of images (N, 3, S, S) in [0, 1] on the backbone's device, eval mode."""
    dev = next(backbone.parameters()).device
    was = backbone.training
    backbone.eval()
    out = torch.cat([backbone(imagenet_normalize(b.to(dev))).float() for b in x.split(batch_size)])
    backbone.train(was)
    return out


def mean_ci(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal-approximation confidence interval (1.96 standard errors)."""
    v = values.double()
    half = 1.96 * v.std(unbiased=True).item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return v.mean().item(), half


def content_pairs(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """For each image i, a different image j of the same class (seeded); -1 where the class has one image."""
    g = torch.Generator().manual_seed(seed)
    partner = torch.full((len(labels),), -1, dtype=torch.long)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < 2:
            continue
        shift = torch.randint(1, len(idx), (len(idx),), generator=g)
        partner[idx] = idx[(torch.arange(len(idx)) + shift) % len(idx)]
    return partner


@torch.no_grad()
def style_invariance(backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, stylize,
                     betas=(1.0, 0.5, 0.25), seed: int = 0) -> list[dict]:
    """Rows {'kind', 'beta', 'cos_mean', 'cos_ci95', 'n'}: cos(f(x), f(T_beta(x))) per beta, and the content
    reference cos(f(x_i), f(x_j)) for j another image of i's class. images (N, 3, S, S) in [0, 1];
    stylize(x, beta, generator) -> stylized x (the same styles for every beta: the generator restarts)."""
    f = F.normalize(embed(backbone, images), dim=1)
    rows = []
    for beta in betas:
        y = stylize(images, beta, torch.Generator().manual_seed(seed))
        cos = (f * F.normalize(embed(backbone, y), dim=1)).sum(1)
        m, h = mean_ci(cos)
        rows.append({"kind": "style change", "beta": beta, "cos_mean": m, "cos_ci95": h, "n": len(cos)})
    partner = content_pairs(labels.cpu(), seed)
    have = partner >= 0
    if have.any():
        cos = (f[have.to(f.device)] * f[partner[have].to(f.device)]).sum(1)
        m, h = mean_ci(cos)
        rows.append({"kind": "content change (same class)", "beta": None, "cos_mean": m, "cos_ci95": h,
                     "n": int(have.sum())})
    return rows


def load_images(parts, size: int, crop_fraction: float, limit: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A side of a target as (N, 3, S, S) float [0, 1] and labels, at most `limit` images (a seeded subset;
    0: all). For the robustness protocols, which hold their (bounded) test images to stylize them."""
    items = [(ds, i) for ds, idx in parts for i in idx]
    if limit and len(items) > limit:
        keep = sorted(torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
        items = [items[k] for k in keep]
    xs, ys = [], []
    for ds, i in items:
        x, y = EvalImages(ds, [i], size, crop_fraction)[0]
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).float().div_(255), torch.tensor(ys, dtype=torch.long)


__all__ = ["check_heldout", "content_pairs", "embed", "load_images", "mean_ci", "style_invariance", "stylize_op"]
