"""Weighted kNN classification on frozen features (cosine similarity, exp(sim / T) votes; Wu et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sassl.eval.features import stream_features
from sassl.eval.linear import linear_probe
from sassl.eval.rankme import rankme


def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024, train_chunk: int = 65536) -> torch.Tensor:
    """Predicted labels (M,) for test_feats (M, D) from train_feats (N, D), train_labels (N,) in [0, C), on the
    features' device. Chunked both ways: at most chunk x train_chunk similarities exist at once (a running
    top-k is merged over train chunks), so N x M never does; features may be float16 (compared in float32)."""
    if len(train_feats) == 0 or len(test_feats) == 0:
        raise ValueError("knn: empty train or test features")
    if k < 1:
        raise ValueError(f"knn: k must be >= 1, got {k}")
    k = min(k, len(train_feats))
    preds = []
    for q in test_feats.split(chunk):
        q = F.normalize(q.float(), dim=1)
        best_sim = torch.empty(len(q), 0, device=q.device)
        best_idx = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
        for start in range(0, len(train_feats), train_chunk):
            tr = F.normalize(train_feats[start:start + train_chunk].float(), dim=1)
            sim, idx = (q @ tr.t()).topk(min(k, len(tr)), dim=1)
            best_sim, pos = torch.cat([best_sim, sim], 1).topk(min(k, best_sim.shape[1] + sim.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + start], 1).gather(1, pos)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, train_labels.to(q.device)[best_idx], (best_sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


knn_predict = torch.no_grad()(knn_predict)  # NOTE: not a decorator, so that mutation testing reaches the body


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes: int, k: int = 20,
                 temperature: float = 0.07) -> float:
    """Top-1 accuracy (0..1) of the weighted kNN classifier."""
    pred = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature)
    return (pred.cpu() == test_labels.cpu()).float().mean().item()


def bounded_subset(n: int, limit: int, seed: int) -> list[int]:
    """All of range(n) when limit is 0 or >= n, else a seeded sorted subset of `limit` indices."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


class KnnMonitor:
    """What a pre-training run watches each `--knn-every` epochs, from one pass over the held-out split's images:
    kNN top-1 (%), the top-1 (%) of a linear probe fit on the same train features (`probe_epochs` > 0) and RankMe
    of the train features. Features are streamed and sharded over ranks (every rank joins and gets the same
    answer, so no rank waits on another in a collective), on seeded subsets of at most max_train / max_test
    images (0: all), fixed for the whole run.

    NOTE: solo-learn's online probe trains on every step's detached batch features; ours is fit afresh at each
    monitor pass on the features the kNN vote already computed (`train_linear`, seeded): nothing is added to
    the step, nothing to checkpoint, and it equals the offline probe on the same features."""

    def __init__(self, train_ds, test_ds, image_size: int, k: int = 20, max_train: int = 0, max_test: int = 0,
                 seed: int = 0, batch_size: int = 256, num_workers: int = 2, probe_epochs: int = 0):
        self.train_ds, self.test_ds, self.image_size, self.k = train_ds, test_ds, image_size, k
        self.train_idx = bounded_subset(len(train_ds), max_train, seed)
        self.test_idx = bounded_subset(len(test_ds), max_test, seed + 1)
        self.batch_size, self.num_workers, self.seed, self.probe_epochs = batch_size, num_workers, seed, probe_epochs

    def features(self, backbone: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        """(train features, train labels, test features, test labels) of the monitor's images."""
        args = dict(image_size=self.image_size, batch_size=self.batch_size, num_workers=self.num_workers)
        return (*stream_features(backbone, self.train_ds, self.train_idx, **args),
                *stream_features(backbone, self.test_ds, self.test_idx, **args))

    def measure(self, backbone: torch.nn.Module) -> dict[str, float]:
        """{'knn_top1', 'rankme'} and, with probe_epochs, 'probe_top1' of the backbone now."""
        tr_f, tr_y, te_f, te_y = self.features(backbone)
        classes = len(self.train_ds.classes)
        out = {"knn_top1": round(100 * knn_accuracy(tr_f, tr_y, te_f, te_y, classes, k=self.k), 2),
               "rankme": round(rankme(tr_f), 2)}
        if self.probe_epochs:
            out["probe_top1"] = round(linear_probe(tr_f, tr_y, te_f, te_y, classes, self.probe_epochs,
                                                   seed=self.seed)["top1"], 2)
        return out

    def __call__(self, backbone: torch.nn.Module) -> float:
        """kNN top-1 (%) alone."""
        return self.measure(backbone)["knn_top1"]
