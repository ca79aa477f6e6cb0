"""How much style an encoder keeps.

    style_decodability: test images, each fully stylized (alpha = beta = 1) with one of K held-out styles drawn
        per image (seeded); a linear probe on the frozen features of half the images learns the style identity
        and is scored on the other half (disjoint contents), chance-corrected:
        (top-1 - chance) / (100 - chance), chance = the share of the most frequent style in the scored half.
        Beside it, the same for the content class on the same stylized features: an encoder that keeps
        content and drops style scores high on the second and near 0 on the first.
    stage_invariance: cosine of f_s(x) and f_s(T(x, style)) at each stage s (ResNet: layer1-4, spatially
        averaged; ViT: the output of each quarter of the blocks, averaged over tokens), beside the cosine of
        two images of one class at that stage (a content change), so a reader sees where style is dropped.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.eval.robustness import content_pairs, mean_ci
from sassl.precision import unwrapped
from sassl.stylizer import stylize
from sassl.views import imagenet_normalize


def render_styles(stylizer, images: torch.Tensor, codes: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """images (N, 3, S, S) in [0, 1], each stylized with its row of codes (N, 100) alone (alpha = beta = 1)."""
    dev = next(stylizer.parameters()).device
    out = []
    with torch.no_grad():
        for x, z in zip(images.split(batch_size), codes.split(batch_size)):
            x, z = x.to(dev), z.to(dev)
            one = torch.ones(len(x), device=dev)
            out.append(stylize(stylizer, x, z, stylizer.embed(x), one, one).cpu())
    return torch.cat(out)


def chance_corrected(top1: float, y: torch.Tensor) -> tuple[float, float]:
    """(chance, (top1 - chance) / (100 - chance)): chance = % of the most frequent label in y (a constant guess)."""
    chance = 100.0 * torch.bincount(y).max().item() / len(y)
    return chance, (top1 - chance) / (100.0 - chance) if chance < 100 else float("nan")


def style_decodability(embed: Callable[[torch.Tensor], torch.Tensor], probe, images: torch.Tensor,
                       labels: torch.Tensor, render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       n_styles: int, seed: int = 0) -> dict:
    """One row: style and content top-1 of a linear probe on the stylized features of one half of the images,
    scored on the other half, each with its chance and chance-corrected value. render(images, style_ids) ->
    stylized images; probe(train_feats, train_y, num_classes) -> predict(feats) -> labels."""
    if len(images) < 4 or n_styles < 2:
        raise ValueError(f"style decodability: needs at least 4 images and 2 styles, got {len(images)}, {n_styles}")
    g = torch.Generator().manual_seed(seed)
    style_y = torch.randint(n_styles, (len(images),), generator=g)
    feats = embed(render(images, style_y))
    order = torch.randperm(len(images), generator=g)
    fit, held = order[: len(order) // 2], order[len(order) // 2:]
    row = {"styles": n_styles, "n_fit": len(fit), "n_scored": len(held)}
    for kind, y, classes in (("style", style_y, n_styles), ("content", labels, int(labels.max()) + 1)):
        predict = probe(feats[fit], y[fit], classes)
        top1 = 100.0 * (predict(feats[held]).cpu() == y[held]).float().mean().item()
        chance, corrected = chance_corrected(top1, y[held])
        row |= {f"{kind}_top1": top1, f"{kind}_chance": chance, f"{kind}_decodability": corrected}
    return row


def stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are a backbone's stages: ResNet layer1-4, or the last block of each quarter of a
    ViT's blocks."""
    backbone = unwrapped(backbone)  # an Autocast-wrapped encoder's stages are its module's
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        return [(f"layer{i}", getattr(backbone, f"layer{i}")) for i in range(1, 5)]
    blocks = getattr(getattr(backbone, "encoder", None), "layers", None)
    if blocks is not None and len(blocks) >= 4:
        n = len(blocks)
        ends = sorted({max(1, round(n * q / 4)) for q in range(1, 5)})
        return [(f"blocks {a + 1}-{b}", blocks[b - 1]) for a, b in zip([0] + ends[:-1], ends)]
    raise ValueError(f"stage features: {type(backbone).__name__} is neither a torchvision ResNet nor a ViT")


@torch.no_grad()
def stage_features(backbone: nn.Module, x: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """{stage: (N, C) float32}: each stage's output averaged over space (maps) or tokens (ViT), eval mode."""
    dev = next(backbone.parameters()).device
    named = stages(backbone)
    got: dict[str, list[torch.Tensor]] = {name: [] for name, _ in named}

    def hook(name):
        def keep(_module, _inputs, out):
            got[name].append((out.mean((2, 3)) if out.ndim == 4 else out.mean(1)).float().cpu())
        return keep
    handles = [m.register_forward_hook(hook(name)) for name, m in named]
    was = backbone.training
    backbone.eval()
    try:
        for b in x.split(batch_size):
            backbone(imagenet_normalize(b.to(dev)))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was)
    return {name: torch.cat(v) for name, v in got.items()}


def stage_invariance(backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, stylized: torch.Tensor,
                     seed: int = 0) -> list[dict]:
    """Rows {'stage', 'kind', 'cos_mean', 'cos_ci95', 'n'}: per stage, cos(f_s(x), f_s(stylized x)) and
    cos(f_s(x_i), f_s(x_j)) for j another image of i's class."""
    clean, styl = stage_features(backbone, images), stage_features(backbone, stylized)
    partner = content_pairs(labels.cpu(), seed)
    have = partner >= 0
    rows = []
    for name in clean:
        a, b = F.normalize(clean[name], dim=1), F.normalize(styl[name], dim=1)
        m, h = mean_ci((a * b).sum(1))
        rows.append({"stage": name, "kind": "style change", "cos_mean": m, "cos_ci95": h, "n": len(a)})
        if have.any():
            m, h = mean_ci((a[have] * a[partner[have]]).sum(1))
            rows.append({"stage": name, "kind": "content change (same class)", "cos_mean": m, "cos_ci95": h,
                         "n": int(have.sum())})
    return rows


__all__ = ["chance_corrected", "render_styles", "stage_features", "stage_invariance", "stages", "style_decodability"]
