"""Naive references the tests hold the code against: the same quantities written the slow, obvious way (loops,
float64), never calling the code under test. One home for each, imported by every test that needs it."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, t: float, extra: torch.Tensor | None = None,
                   rank: int = 0) -> torch.Tensor:
    """Mean over i of -log(exp(cos(q_i, k_p) / t) / sum_j exp(cos(q_i, c_j) / t)), c = k then extra, p = i + rank B:
    one query at a time, in float64."""
    cands = (k if extra is None else torch.cat([k, extra])).double()
    cands = cands / cands.norm(dim=1, keepdim=True)
    total = 0.0
    for i, qi in enumerate(q.double()):
        sims = (cands @ (qi / qi.norm())).tolist()
        total += -(sims[i + rank * len(q)] / t - math.log(sum(math.exp(s / t) for s in sims)))
    return torch.tensor(total / len(q))


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's loss by loops: anchors z1 then z2; positive the other view; the 2B - 2 others negatives."""
    z = list(z1) + list(z2)
    b, total = len(z1), 0.0
    for a in range(2 * b):
        pos = a + b if a < b else a - b
        sims = {c: float(F.cosine_similarity(z[a], z[c], dim=0)) / t for c in range(2 * b) if c != a}
        total += -(sims[pos] - math.log(sum(math.exp(s) for s in sims.values())))
    return torch.tensor(total / (2 * b))


def naive_nt_xent_of_rank(z1, z2, z1_all, z2_all, rank: int, t: float) -> torch.Tensor:
    """NT-Xent of one rank's 2B anchors against all ranks' 2N candidates, by loops in float64: anchor z1[i]
    (global row g = i + rank B) has positive z2_all[g] and every candidate but z1_all[g] (itself) in its
    denominator; anchor z2[i] the same with the views swapped."""
    cands = [F.normalize(c.double(), dim=0) for c in list(z1_all) + list(z2_all)]
    b, n, total = len(z1), len(z1_all), 0.0
    for view, zs in enumerate((z1, z2)):
        for i, a in enumerate(zs):
            g = i + rank * b
            me, pos = (g, g + n) if view == 0 else (g + n, g)
            a = F.normalize(a.double(), dim=0)
            sims = {c: float(a @ cands[c]) / t for c in range(2 * n) if c != me}
            total += -(sims[pos] - math.log(sum(math.exp(v) for v in sims.values())))
    return torch.tensor(total / (2 * b))
