"""Cue-conflict shape bias on any labelled dataset (Geirhos et al. 2019's measure, on images we render).

Each test image of class A is stylized with an exemplar of another class B of the same split (p = 1,
alpha = 1, beta = 1: the exemplar's style code alone, full pixels), the exemplar drawn per image from a
seeded generator. A classifier fit on clean training features labels the cue-conflict image; an answer is
decisive when it names A (the shape: the content's class) or B (the texture: the exemplar's class), and

    shape bias = shape answers / decisive answers.

NOTE: Geirhos et al. score 16 ImageNet classes on fixed stimuli rendered with AdaIN; here any labelled target
is rendered with our stylizer, so the numbers compare encoders on one target, not with the published ones.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from sassl.eval.style_probe import render_styles


def cue_conflict_pairs(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """For each image i, an image j of another class (uniform over them, seeded); -1 where there is none."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((len(labels),), -1, dtype=torch.long)
    for i in range(len(labels)):
        others = (labels != labels[i]).nonzero().flatten()
        if len(others):
            out[i] = others[torch.randint(len(others), (1,), generator=g)]
    return out


def stylizer_render(stylizer) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """render(content, style) -> content stylized with style's code alone (alpha 1, beta 1, style_probe's
    render_styles), on the stylizer's device; both (N, 3, S, S) in [0, 1]."""
    dev = next(stylizer.parameters()).device

    @torch.no_grad()
    def render(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return render_styles(stylizer, content, stylizer.embed(style.to(dev)))
    return render


def cue_conflict_images(content: torch.Tensor, style: torch.Tensor, render, batch_size: int = 64) -> torch.Tensor:
    """render(content[i], style[i]) for every i, in batches."""
    return torch.cat([render(content[k:k + batch_size], style[k:k + batch_size])
                      for k in range(0, len(content), batch_size)])


def shape_bias_scores(pred: torch.Tensor, shape_y: torch.Tensor, texture_y: torch.Tensor) -> dict:
    """pred, shape_y (the content's class), texture_y (the style exemplar's class): (N,) labels. Returns
    shape_bias = shape / (shape + texture) (NaN without a decisive answer), the shares of shape, texture and
    decisive answers among all N, and the counts."""
    shape = int((pred == shape_y).sum())
    texture = int((pred == texture_y).sum())
    n = len(pred)
    return {"shape_bias": shape / (shape + texture) if shape + texture else float("nan"),
            "shape_share": shape / n, "texture_share": texture / n, "decisive": (shape + texture) / n,
            "shape": shape, "texture": texture, "n": n}


@torch.no_grad()
def shape_bias(embed: Callable[[torch.Tensor], torch.Tensor], heads: dict[str, Callable[[torch.Tensor], torch.Tensor]],
               images: torch.Tensor, labels: torch.Tensor, render, seed: int = 0) -> list[dict]:
    """Rows {'head', 'shape_bias', ..., 'clean_top1'} per classifier head. embed(x) -> features; each head maps
    features to predicted labels (fit on clean training features); images (N, 3, S, S) in [0, 1] with labels;
    render(content, style) as stylizer_render's. Images without an other-class exemplar are left out."""
    style_idx = cue_conflict_pairs(labels, seed)
    keep = style_idx >= 0
    if not keep.any():
        raise ValueError("shape bias: needs test images of at least two classes")
    x, y, s = images[keep], labels[keep], style_idx[keep]
    conflict = embed(cue_conflict_images(x, images[s], render))
    clean = embed(x)
    rows = []
    for name, head in heads.items():
        pred = head(conflict).cpu()
        rows.append({"head": name} | shape_bias_scores(pred, y, labels[s]) |
                    {"clean_top1": float((head(clean).cpu() == y).float().mean()) * 100})
    return rows


__all__ = ["cue_conflict_images", "cue_conflict_pairs", "shape_bias", "shape_bias_scores", "stylizer_render"]
