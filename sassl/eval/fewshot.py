"""Few-shot evaluation: N labelled images per class (seeded episodes), a linear classifier on their
frozen features, accuracy on the whole test split; mean and std over episodes."""
from __future__ import annotations

import torch

from sassl.eval.linear import predict, scores, train_linear


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` images per class, drawn with `seed`. Raises when a class has fewer images."""
    if shots < 1:
        raise ValueError(f"few-shot: shots must be >= 1, got {shots}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < shots:
            raise ValueError(f"few-shot: {shots} shots asked but class {c} has only {len(idx)} training images")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    return torch.cat(picked)


def few_shot(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
             num_classes: int, shots: int = 1, episodes: int = 5, seed: int = 0, epochs: int = 100) -> list[dict]:
    """One score dict per episode (episode e uses seed + e); features (N, D) from a frozen backbone."""
    out = []
    for e in range(episodes):
        idx = sample_shots(train_labels, shots, seed + e)
        with torch.enable_grad():
            clf = train_linear(train_feats[idx], train_labels[idx], num_classes, epochs=epochs, lr=0.1,
                               batch_size=len(idx), seed=seed + e)
        with torch.no_grad():
            out.append(scores(predict(clf, test_feats), test_labels.cpu()) | {"episode": e, "episode_seed": seed + e})
    return out
