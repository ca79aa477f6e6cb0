"""Few-shot evaluation: N labelled images per class (seeded episodes), a linear classifier on their
frozen features, accuracy on the whole test split; mean and std over episodes."""
from __future__ import annotations

from pathlib import Path

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


def read_fewshot_list(path: str | Path, train_names: list[str]) -> dict[int, list[torch.Tensor]]:
    """Few-shot training sets from a split file: lines 'SHOTS EPISODE IMAGE_NAME' ('#' comments and blank lines
    skipped) -> {shots: [indices of episode 0, 1, ...]} into the train side, whose file names are `train_names`
    in order. ValueError names a listed image that is not in the train side, or a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such few-shot split file (lines: SHOTS EPISODE IMAGE_NAME)")
    where = {n: k for k, n in enumerate(train_names)}
    sets: dict[int, dict[int, list[int]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: expected 'SHOTS EPISODE IMAGE_NAME', got {line!r}")
        name = Path(parts[2]).name
        if name not in where:
            raise ValueError(f"{path}:{n}: {name} is not in the target's train side; check the file belongs to it")
        sets.setdefault(int(parts[0]), {}).setdefault(int(parts[1]), []).append(where[name])
    if not sets:
        raise ValueError(f"{path}: lists no images")
    return {shots: [torch.tensor(eps[e]) for e in sorted(eps)] for shots, eps in sorted(sets.items())}


def few_shot(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
             num_classes: int, shots: int = 1, episodes: int = 5, seed: int = 0, epochs: int = 100,
             picks: list[torch.Tensor] | None = None) -> list[dict]:
    """One score dict per episode (episode e uses seed + e); features (N, D) from a frozen backbone.
    `picks`: the episodes' training indices given (from a split file, read_fewshot_list) instead of drawn."""
    out = []
    for e in range(len(picks) if picks is not None else episodes):
        idx = picks[e] if picks is not None else sample_shots(train_labels, shots, seed + e)
        with torch.enable_grad():
            clf = train_linear(train_feats[idx], train_labels[idx], num_classes, epochs=epochs, lr=0.1,
                               batch_size=len(idx), seed=seed + e)
        with torch.no_grad():
            out.append(scores(predict(clf, test_feats), test_labels.cpu()) | {"episode": e, "episode_seed": seed + e})
    return out
