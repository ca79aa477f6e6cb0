"""Labelled evaluation targets, as lists of images (datasets + indices; nothing decoded here):
`name` or `name@test_split`.

    load_target("objects")              # train vs test
    load_target("objects@test_shift")   # train vs the style-shift split
    load_target("textures")             # one labelled pool: a seeded, stratified train/test split
    load_target("imagefolder:/data/dtd") # PATH/train (+ PATH/val when PATH/test exists) vs PATH/test (else val)

Features come from eval.features (the paper's preprocessing, streamed, cached per split).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sassl.data import get_dataset, held_out_split, parse_name, splits_of


@dataclass
class Target:
    """train / test: the images of each side as (dataset, indices) parts, in order (a final probe may train
    on train + val); train_y / test_y: their labels in that order."""

    name: str
    classes: list[str]
    train: list[tuple[object, list[int]]]
    test: list[tuple[object, list[int]]]
    train_y: torch.Tensor   # (N,) int64 in [0, C)
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


def read_list(path: str | Path) -> list[str]:
    """Image names from a list file, one per line (blank lines and '#' comments skipped); a name may carry a
    folder ('n01440764/n01440764_10026.JPEG') or a trailing label ('NAME 3'), of which the file name is used."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such list file (one image name per line, e.g. ImageNet's 1percent.txt)")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(Path(line.split()[0]).name)
    if not names:
        raise ValueError(f"{path}: lists no image names")
    return names


def select_listed(parts: list[tuple[object, list[int]]], names: list[str], what: str) -> list[tuple[object, list[int]]]:
    """The parts cut to the images whose file name is listed; ValueError naming listed images not found."""
    where = {}
    for k, (ds, idx) in enumerate(parts):
        if ds.files is None:
            raise ValueError(f"{what}: selects images by file name, but {ds.name} holds its images in memory")
        for i in idx:
            where.setdefault(Path(str(ds.files[i])).name, (k, i))
    missing = [n for n in names if n not in where]
    if missing:
        raise ValueError(f"{what}: {len(missing)} of {len(names)} listed images are not in the train split "
                         f"(first: {', '.join(missing[:3])}); check that the list belongs to this dataset")
    keep: list[list[int]] = [[] for _ in parts]
    for n in dict.fromkeys(names):
        k, i = where[n]
        keep[k].append(i)
    return [(ds, sorted(keep[k])) for k, (ds, _) in enumerate(parts)]


def _labelled(ds) -> list[int]:
    return [i for i, y in enumerate(ds.labels) if y >= 0]


def load_target(name: str, test_fraction: float = 0.5, split_seed: int = 0, max_per_split: int = 0,
                train_list: str = "", merge_val: bool = True) -> Target:
    """A labelled target for frozen-feature protocols. Raises ValueError for unlabelled data or fewer than 2
    classes, naming the dataset.

    A dataset with train/, val/ and test/ trains on train + val and reports on test (`merge_val=False`: train
    only, keeping val for model selection); with train/ and one held-out split, that split is the test side;
    one pool gets a seeded stratified split. `train_list`: a file of image names (ImageNet's 1% / 10% lists)
    that the train side is cut to. `max_per_split` > 0 keeps a seeded subset of each part (quick runs)."""
    base, _ = parse_name(name)
    test_split = held_out_split(name)
    has = splits_of(base)
    if test_split is None or "train" not in has:
        pool = get_dataset(base, split="all")
        if not pool.classes or all(y < 0 for y in pool.labels):
            raise ValueError(f"target {name}: has no labels; evaluation needs a labelled dataset "
                             "(a class-per-folder tree for imagefolder:PATH)")
        tr_idx, te_idx = stratified_split(pool.labels, test_fraction, split_seed)
        train, test = [(pool, tr_idx)], [(pool, te_idx)]
        note = f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split (seed {split_seed})"
    else:
        train_ds, test_ds = get_dataset(base, split="train"), get_dataset(base, split=test_split)
        if not train_ds.classes or all(y < 0 for y in train_ds.labels):
            raise ValueError(f"target {name}: has no labels; evaluation needs a labelled dataset "
                             "(a class-per-folder tree for imagefolder:PATH)")
        train, test = [(train_ds, _labelled(train_ds))], [(test_ds, _labelled(test_ds))]
        note = f"train vs {test_ds.meta.get('split', test_split)}"
        if merge_val and test_split == "test" and "val" in has:
            val_ds = get_dataset(base, split="val")
            train.append((val_ds, _labelled(val_ds)))
            note = "train + val vs test"
        pool = train_ds
    if train_list:
        names = read_list(train_list)
        train = select_listed(train, names, f"train_list {train_list}")
        note += f", train cut to the {len(set(names))} images of {Path(train_list).name}"
    if max_per_split:
        g = torch.Generator().manual_seed(split_seed)

        def cap(parts):
            return [(ds, sorted(idx[k] for k in torch.randperm(len(idx), generator=g)[:max_per_split].tolist()))
                    for ds, idx in parts]
        train, test = cap(train), cap(test)
    if not sum(len(i) for _, i in train) or not sum(len(i) for _, i in test):
        raise ValueError(f"target {name}: empty train or test split (train {sum(len(i) for _, i in train)}, "
                         f"test {sum(len(i) for _, i in test)} images)")
    labels = lambda parts: torch.tensor([ds.labels[i] for ds, idx in parts for i in idx], dtype=torch.long)  # noqa: E731
    train_y, test_y = labels(train), labels(test)
    if len(train_y.unique()) < 2:
        raise ValueError(f"target {name}: only one class in its train split; a classifier needs at least 2")
    meta = {"split": note, "source_used": pool.meta.get("source_used", name)}
    return Target(name, list(pool.classes), train, test, train_y, test_y, meta)
