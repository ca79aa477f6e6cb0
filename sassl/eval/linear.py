"""Linear probe on a frozen backbone (docs/DESIGN.md §2.2): SGD + Nesterov momentum 0.9, cosine schedule, no
weight decay, mini-batches over the features on their device. Features come cached from eval.features;
the augmented probe streams fresh random crops and flips through the backbone every epoch instead."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F



def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of rows whose label is among the k largest logits. logits (N, C), labels (N,)."""
    k = min(k, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, and top5 when there are at least 10 classes (else None: top-5 of few classes says little)."""
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5) if logits.shape[1] >= 10 else None}


def feature_stats(feats: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (population) of features (N, D) in float32, in chunks (float16 features
    of a large set are never copied to float32 whole)."""
    total = torch.zeros(feats.shape[1], dtype=torch.float64, device=feats.device)
    sq = torch.zeros_like(total)
    for c in feats.split(chunk):
        c = c.double()
        total += c.sum(0)
        sq += (c * c).sum(0)
    mean = total / len(feats)
    return mean.float(), (sq / len(feats) - mean * mean).clamp_min(0).sqrt().float() + 1e-6


def train_linear(train_feats: torch.Tensor, train_labels: torch.Tensor, num_classes: int, epochs: int = 100,
                 lr: float = 0.1, batch_size: int = 256, seed: int = 0, feats_fn=None) -> nn.Module:
    """A linear classifier on features (N, D) -> logits (N, C), trained on the features' device (they may
    be float16; each mini-batch is standardised in float32 with the train statistics, which are part of the
    returned module). `feats_fn(epoch)` replaces the features each epoch (augmented mode; same N, same
    order as train_labels).

    NOTE: the standardisation is ours (the paper trains on raw features); it makes one learning rate
    work across backbones and training stages."""
    if len(train_feats) == 0:
        raise ValueError("linear probe: no training features")
    g = torch.Generator().manual_seed(seed)
    dev = train_feats.device
    mean, std = feature_stats(train_feats)
    head = nn.Linear(train_feats.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    head = head.to(dev)
    labels = train_labels.to(dev)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    n = len(train_feats)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for epoch in range(epochs):
        feats = train_feats if feats_fn is None else feats_fn(epoch)
        for idx in torch.randperm(n, generator=g).to(dev).split(batch_size):
            loss = F.cross_entropy(head((feats[idx].float() - mean) / std), labels[idx])
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


def predict(clf: nn.Module, feats: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """clf's logits (N, C) on the CPU for features (N, D) of any dtype, in chunks."""
    with torch.no_grad():
        return torch.cat([clf(c.float()).cpu() for c in feats.split(chunk)])


def linear_probe(train_feats: torch.Tensor, train_y: torch.Tensor, test_feats: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int = 100, lr: float = 0.1, batch_size: int = 256, seed: int = 0,
                 augmented=None) -> dict:
    """Top-1 (and top-5) of a linear classifier on frozen features. `augmented(epoch)`: the train features
    of freshly augmented images for that epoch (streamed by the caller) instead of `train_feats`."""
    with torch.enable_grad():
        clf = train_linear(train_feats, train_y, num_classes, epochs, lr, batch_size, seed, augmented)
    return scores(predict(clf, test_feats), test_y.cpu())
