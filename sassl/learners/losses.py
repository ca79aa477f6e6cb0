"""SSL losses as pure functions. Embeddings are (batch, dim); nothing here normalises in place.

Each loss computes in float32 whatever its inputs' dtype, with autocast off: under bf16 autocast the
similarity matmul would run in bf16, and at T = 0.1 that moves the loss by about 0.4% and its gradient by
about 2% (docs/DESIGN.md §6: reductions that set gradients run in float32).

NOTE: float32 is applied after each definition (`info_nce = float32(info_nce)`) rather than as a decorator
so that mutation testing reaches the losses' bodies (mutmut does not mutate decorated functions)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def float32(loss):
    """Run `loss` with autocast off and its tensor arguments cast to float32 (gradients flow back in the
    inputs' own dtype)."""
    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        def up(v):
            return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        device = next((v.device.type for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return loss(*map(up, args), **{k: up(v) for k, v in kwargs.items()})
    return wrapper


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.1, queue: torch.Tensor | None = None,
             rank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """InfoNCE of queries against keys: the positive of q[i] is k[i + rank * len(q)].

    q: (B, D) local queries; k: (B * world, D) keys (all ranks' keys when distributed, else B);
    queue: optional (Q, D) extra negatives (classic MoCo v2). Both are L2-normalised here.
    Returns the mean cross-entropy (a scalar), or with reduction='none' each query's (B,). Shapes: logits
    (B, B * world [+ Q]).
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.t()
    if queue is not None:
        logits = torch.cat([logits, q @ F.normalize(queue, dim=1).t()], dim=1)
    labels = torch.arange(len(q), device=q.device) + rank * len(q)
    return F.cross_entropy(logits / temperature, labels, reduction=reduction)


info_nce = float32(info_nce)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            z1_all: torch.Tensor | None = None, z2_all: torch.Tensor | None = None, rank: int = 0,
            reduction: str = "mean") -> torch.Tensor:
    """SimCLR's NT-Xent. z1, z2: (B, D) the two views of the local batch; z*_all: (B * world, D)
    gathered across ranks (default: the local ones). Each of the 2B anchors has one positive (its
    other view) and 2 * B * world - 2 negatives (itself excluded). Returns the mean over anchors, or with
    reduction='none' each anchor's (2B,): view 1's B anchors, then view 2's."""
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    b, n = len(z1), len(z1_all)
    a = F.normalize(torch.cat([z1, z2]), dim=1)                 # (2B, D) anchors
    c = F.normalize(torch.cat([z1_all, z2_all]), dim=1)         # (2N, D) candidates
    logits = a @ c.t() / temperature                            # (2B, 2N)
    idx = torch.arange(b, device=a.device) + rank * b           # global index of local rows
    self_idx = torch.cat([idx, idx + n])
    pos_idx = torch.cat([idx + n, idx])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx, reduction=reduction)


nt_xent = float32(nt_xent)


def byol_loss(p: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BYOL regression loss 2 - 2 cos(p, z), mean over the batch (reduction='none': each row's, (B,)).
    p: (B, D) predictions; z: (B, D) targets."""
    per_row = 2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)
    return per_row.mean() if reduction == "mean" else per_row


byol_loss = float32(byol_loss)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021): each embedding dimension standardised over the batch (batch norm
    without affine, biased variance, `eps`), then the (D, D) cross-correlation c = z1n^T z2n / B; the loss is
    sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2, a scalar. z1, z2: (B, D), B >= 2."""
    n = len(z1)
    z1n = F.batch_norm(z1, None, None, training=True, eps=eps)
    z2n = F.batch_norm(z2, None, None, training=True, eps=eps)
    c = z1n.t() @ z2n / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambd * off


barlow_twins_loss = float32(barlow_twins_loss)


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim: float = 25.0, var: float = 25.0, cov: float = 1.0,
                eps: float = 1e-4) -> torch.Tensor:
    """VICReg (Bardes et al. 2022): sim * invariance (mean squared error of the two views) + var * variance (the
    mean hinge of each dimension's std, sqrt(var + eps) with the unbiased variance, below 1; the two views
    averaged) + cov * covariance (each view's off-diagonal covariance entries squared, summed, over D; the two
    views added). z1, z2: (B, D), B >= 2; a scalar."""
    d = z1.shape[1]
    invariance = F.mse_loss(z1, z2)
    variance = sum(F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean() for z in (z1, z2)) / 2

    def off_diagonal_cov(z: torch.Tensor) -> torch.Tensor:
        zc = z - z.mean(dim=0)
        c = zc.t() @ zc / (len(z) - 1)
        return (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / d

    return sim * invariance + var * variance + cov * (off_diagonal_cov(z1) + off_diagonal_cov(z2))


vicreg_loss = float32(vicreg_loss)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float = 0.1,
              teacher_temp: float = 0.04, reduction: str = "mean") -> torch.Tensor:
    """DINO (Caron et al. 2021): the teacher's centred, sharpened distributions softmax((t - center) / teacher_temp)
    as targets for the student's log_softmax(s / student_temp), cross-entropy over every pair of a teacher view and
    a student view other than the same view, averaged over the pairs. student: (Vs, B, K) logits of Vs views (the
    global ones first); teacher: (Vt, B, K) of the Vt global views (no gradient flows to it); center: (K,).
    reduction 'mean': a scalar; 'none': each image's (B,)."""
    targets = F.softmax((teacher.detach() - center) / teacher_temp, dim=-1)
    log_p = F.log_softmax(student / student_temp, dim=-1)
    per_image, pairs = torch.zeros(student.shape[1], device=student.device), 0
    for i in range(len(targets)):
        for j in range(len(log_p)):
            if i != j:
                per_image = per_image - (targets[i] * log_p[j]).sum(dim=-1)
                pairs += 1
    if pairs == 0:
        raise ValueError(f"dino_loss: needs two views in all, got {len(targets)} teacher and {len(log_p)} student")
    per_image = per_image / pairs
    return per_image.mean() if reduction == "mean" else per_image


dino_loss = float32(dino_loss)
