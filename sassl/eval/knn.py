"""Weighted kNN classification on frozen features (cosine similarity, exp(sim / T) votes; Wu et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Predicted labels (M,) for test_feats (M, D) from train_feats (N, D), train_labels (N,) in [0, C)."""
    if len(train_feats) == 0 or len(test_feats) == 0:
        raise ValueError("knn: empty train or test features")
    if k < 1:
        raise ValueError(f"knn: k must be >= 1, got {k}")
    k = min(k, len(train_feats))
    tr = F.normalize(train_feats.float(), dim=1)
    preds = []
    for q in F.normalize(test_feats.float(), dim=1).split(chunk):
        sim, idx = (q @ tr.t()).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes: int, k: int = 20,
                 temperature: float = 0.07) -> float:
    """Top-1 accuracy (0..1) of the weighted kNN classifier."""
    pred = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature)
    return (pred.cpu() == test_labels.cpu()).float().mean().item()


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> torch.Tensor:
    """Backbone features (N, D) of images (N, 3, H, W) in [0, 1] (normalised here), in eval mode."""
    was_training = backbone.training
    backbone.eval()
    dev = next(backbone.parameters()).device
    m = torch.tensor(mean, device=dev)[None, :, None, None]
    s = torch.tensor(std, device=dev)[None, :, None, None]
    out = [backbone((x.to(dev).float() - m) / s).float().cpu() for x in images.split(batch_size)]
    backbone.train(was_training)
    return torch.cat(out)
