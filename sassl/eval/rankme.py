"""RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained self-supervised
representations by their rank"): the effective rank of a set of embeddings, a collapse metric that needs no labels.
exp of the entropy of the singular values normalised to sum to 1: D for embeddings that fill D dimensions
evenly, r for embeddings confined evenly to r dimensions, 1 for a collapsed set."""
from __future__ import annotations

import torch

EPS = 1e-7  # the paper's epsilon inside the log (singular values that vanish add nothing)


def rankme(z: torch.Tensor, eps: float = EPS) -> float:
    """RankMe of embeddings z (N, D), any dtype: exp(-sum_k p_k log p_k), p_k = s_k / sum(s) + eps, s the
    singular values of z (not centred, as the paper). At most min(N, D)."""
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"rankme: needs embeddings (N, D) with N, D >= 1, got shape {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.detach().double())
    p = s / s.sum().clamp_min(1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))


__all__ = ["rankme"]
