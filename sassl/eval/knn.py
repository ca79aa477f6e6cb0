"""Weighted kNN classification on frozen features (cosine similarity, exp(sim / T) votes; Wu et al. 2018)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sassl import dist
from sassl.data.decode import center_square


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


def bounded_subset(n: int, limit: int, seed: int) -> list[int]:
    """All of range(n) when limit is 0 or >= n, else a seeded sorted subset of `limit` indices."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


class _CentreSquares(torch.utils.data.Dataset):
    """dataset[indices[k]] as a (3, size, size) uint8 centre square and its label (unusable files replaced
    by the next usable one, as in training)."""

    def __init__(self, ds, indices: list[int], size: int):
        self.ds, self.indices, self.size = ds, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        j, img = self.ds.usable(self.indices[k])
        a = np.asarray(center_square(img, self.size), dtype=np.uint8)
        return torch.from_numpy(a.copy()).permute(2, 0, 1), self.ds.labels[j]


@torch.no_grad()
def stream_features(backbone: torch.nn.Module, ds, indices: list[int], image_size: int, batch_size: int = 256,
                    num_workers: int = 2, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (N, D) and labels (N,) of ds[indices] (centre squares of image_size, ImageNet
    normalisation, eval mode), streamed through a DataLoader: only the features are ever held. Under
    torch.distributed rank r embeds indices[r::world] and every rank gets all N back, in `indices` order."""
    world, r = dist.world_size(), dist.rank()
    mine = _CentreSquares(ds, indices[r::world], image_size)
    dev = next(backbone.parameters()).device
    m = torch.tensor(mean, device=dev)[None, :, None, None]
    s = torch.tensor(std, device=dev)[None, :, None, None]
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    loader = torch.utils.data.DataLoader(mine, batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=dev.type == "cuda")
    for x, y in loader:
        x = x.to(dev, non_blocking=True).float().div_(255).sub_(m).div_(s).contiguous(memory_format=torch.channels_last)
        feats.append(backbone(x).float())
        labels.append(y.to(dev))
    if not feats:  # fewer images than ranks: this rank has none, but its (0, D) part must match the others'
        feats.append(backbone(torch.zeros(1, 3, image_size, image_size, device=dev)).float()[:0])
    backbone.train(was_training)
    f = torch.cat(feats)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=dev)
    if world == 1:
        return f, y
    fs, ys = dist.gather_uneven(f), dist.gather_uneven(y)
    out_f = torch.empty(len(indices), fs[0].shape[1], device=dev)
    out_y = torch.empty(len(indices), dtype=torch.long, device=dev)
    for k in range(world):  # rank k held positions k, k + world, ...
        out_f[k::world], out_y[k::world] = fs[k], ys[k]
    return out_f, out_y


class KnnMonitor:
    """kNN top-1 (%) of a backbone: train/test features streamed and sharded over ranks (every rank joins
    and gets the same answer, so no rank waits on another in a collective), on seeded subsets of at most
    max_train / max_test images (0: all), fixed for the whole run."""

    def __init__(self, train_ds, test_ds, image_size: int, k: int = 20, max_train: int = 0, max_test: int = 0,
                 seed: int = 0, batch_size: int = 256, num_workers: int = 2):
        self.train_ds, self.test_ds, self.image_size, self.k = train_ds, test_ds, image_size, k
        self.train_idx = bounded_subset(len(train_ds), max_train, seed)
        self.test_idx = bounded_subset(len(test_ds), max_test, seed + 1)
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(self, backbone: torch.nn.Module) -> float:
        args = dict(image_size=self.image_size, batch_size=self.batch_size, num_workers=self.num_workers)
        tr_f, tr_y = stream_features(backbone, self.train_ds, self.train_idx, **args)
        te_f, te_y = stream_features(backbone, self.test_ds, self.test_idx, **args)
        acc = knn_accuracy(tr_f, tr_y, te_f, te_y, len(self.train_ds.classes), k=self.k)
        return round(100 * acc, 2)
