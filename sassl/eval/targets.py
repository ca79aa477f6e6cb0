"""Labelled evaluation targets as in-memory tensors: `name` or `name@test_split`.

    load_target("objects")              # train vs test
    load_target("objects@test_shift")   # train vs the style-shift split
    load_target("textures")             # one labelled pool: a seeded, stratified train/test split
    load_target("imagefolder:/data/dtd") # PATH/train vs PATH/test (else val) if present, else a stratified split

Images follow the paper's small-target protocol (docs/DESIGN.md §2.2): shorter side resized, centre crop,
no augmentation; ImageNet normalisation happens in the feature extractor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sassl.data import get_dataset, held_out_split, parse_name, resize_all, splits_of


@dataclass
class Target:
    name: str
    classes: list[str]
    train_x: torch.Tensor   # (N, 3, S, S) float [0, 1]
    train_y: torch.Tensor   # (N,) int64 in [0, C)
    test_x: torch.Tensor
    test_y: torch.Tensor
    meta: dict

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_split(labels: list[int], test_fraction: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, test) indices with every labelled class (>= 2 images) on both sides; label -1 is dropped."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in sorted({y for y in labels if y >= 0}):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
        if len(idx) < 2:
            continue
        n_test = min(len(idx) - 1, max(1, round(len(idx) * test_fraction)))
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


def _splits_of(name: str) -> tuple[object, object | None]:
    """(train dataset, test dataset or None when the data has one pool)."""
    base, _ = parse_name(name)
    test_split = held_out_split(name)
    if test_split is None or "train" not in splits_of(base):
        return get_dataset(base, split="all"), None
    return get_dataset(base, split="train"), get_dataset(base, split=test_split)


def load_target(name: str, size: int = 64, test_fraction: float = 0.5, split_seed: int = 0,
                max_per_split: int = 0) -> Target:
    """A labelled target ready for frozen-feature protocols. Raises ValueError for unlabelled data or
    fewer than 2 classes, naming the dataset. `max_per_split` > 0 keeps a seeded subset (quick runs)."""
    train_ds, test_ds = _splits_of(name)
    if not train_ds.classes or all(y < 0 for y in train_ds.labels):
        raise ValueError(f"target {name}: has no labels; evaluation needs a labelled dataset "
                         "(a class-per-folder tree for imagefolder:PATH)")
    if test_ds is None:
        tr_idx, te_idx = stratified_split(train_ds.labels, test_fraction, split_seed)
        test_ds, split_note = train_ds, f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split (seed {split_seed})"
    else:
        tr_idx = [i for i, y in enumerate(train_ds.labels) if y >= 0]
        te_idx = [i for i, y in enumerate(test_ds.labels) if y >= 0]
        split_note = f"train vs {test_ds.meta.get('split', 'test')}"
    if max_per_split:
        g = torch.Generator().manual_seed(split_seed)
        tr_idx = sorted(tr_idx[k] for k in torch.randperm(len(tr_idx), generator=g)[:max_per_split].tolist())
        te_idx = sorted(te_idx[k] for k in torch.randperm(len(te_idx), generator=g)[:max_per_split].tolist())
    if not tr_idx or not te_idx:
        raise ValueError(f"target {name}: empty train or test split (train {len(tr_idx)}, test {len(te_idx)} images)")
    train_x, train_y = resize_all(train_ds, size, tr_idx)
    test_x, test_y = resize_all(test_ds, size, te_idx)
    if len(train_y.unique()) < 2:
        raise ValueError(f"target {name}: only one class in its train split; a classifier needs at least 2")
    meta = {"split": split_note, "source_used": train_ds.meta.get("source_used", name), "image_size": size}
    return Target(name, list(train_ds.classes), train_x, train_y, test_x, test_y, meta)
