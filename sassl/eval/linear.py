"""Linear probe on a frozen backbone (docs/DESIGN.md §2.2): SGD + Nesterov momentum 0.9, cosine schedule, no
weight decay. Features are extracted once and cached (fast); `augment=True` draws fresh random crops and
flips every epoch and extracts their features (for large targets)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.eval.knn import extract_features


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of rows whose label is among the k largest logits. logits (N, C), labels (N,)."""
    k = min(k, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, and top5 when there are at least 10 classes (else None: top-5 of few classes says little)."""
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5) if logits.shape[1] >= 10 else None}


def random_crops(x: torch.Tensor, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-image random resized crop (area `scale`, log-uniform aspect `ratio`) and horizontal flip,
    batched with roi_align on x's device. x (N, 3, H, W) -> (N, 3, H, W)."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(*scale, generator=g) * h * w
    logr = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    cw = (area * logr.exp()).sqrt().clamp(1, w)
    ch = (area / logr.exp()).sqrt().clamp(1, h)
    x0 = torch.rand(n, generator=g) * (w - cw)
    y0 = torch.rand(n, generator=g) * (h - ch)
    boxes = torch.stack([torch.arange(n, dtype=torch.float), x0, y0, x0 + cw, y0 + ch], 1).to(x.device, x.dtype)
    out = roi_align(x, boxes, (h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_linear(train_feats: torch.Tensor, train_labels: torch.Tensor, num_classes: int, epochs: int = 100,
                 lr: float = 0.1, batch_size: int = 256, seed: int = 0, feats_fn=None) -> nn.Module:
    """A linear classifier on features (N, D) -> logits (N, C). Features are standardised with the
    train statistics (part of the returned module). `feats_fn(epoch)` replaces the features each epoch
    (augmented mode; same N, same order as train_labels).

    NOTE: the standardisation is ours (the paper trains on raw features); it makes one learning rate
    work across backbones and training stages."""
    if len(train_feats) == 0:
        raise ValueError("linear probe: no training features")
    g = torch.Generator().manual_seed(seed)
    dev = train_feats.device
    mean, std = train_feats.mean(0), train_feats.std(0, unbiased=False) + 1e-6
    head = nn.Linear(train_feats.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    head = head.to(dev)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    n = len(train_feats)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for epoch in range(epochs):
        feats = train_feats if feats_fn is None else feats_fn(epoch)
        z = (feats - mean) / std
        for idx in torch.randperm(n, generator=g).to(dev).split(batch_size):
            loss = F.cross_entropy(head(z[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return nn.Sequential(_Standardize(mean, std), head).eval()


class _Standardize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def linear_probe(backbone: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, num_classes: int, epochs: int = 100, lr: float = 0.1, batch_size: int = 256,
                 seed: int = 0, augment: bool = False, cache: dict | None = None) -> dict:
    """Top-1 (and top-5) of a linear classifier on the frozen backbone. `cache` (a dict) keeps the
    extracted features between calls (e.g. over seeds)."""
    cache = {} if cache is None else cache
    if "train" not in cache:
        cache["train"], cache["test"] = extract_features(backbone, train_x), extract_features(backbone, test_x)
    def augmented(epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return extract_features(backbone, random_crops(train_x, g))

    feats_fn = augmented if augment else None
    with torch.enable_grad():
        clf = train_linear(cache["train"], train_y, num_classes, epochs, lr, batch_size, seed, feats_fn)
    with torch.no_grad():
        return scores(clf(cache["test"]), test_y)
