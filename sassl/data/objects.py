"""`objects`: a labelled content benchmark composited from real photo cut-outs over real backgrounds.

Tux Paint stamps (RGBA cut-outs, label = class folder) are pasted at random scale, position and flip
over random crops of real photos and textures. Train and test never share an object identity (a stamp
file, with numbered variants such as `pig2` grouped with `pig`). `test_shift` uses the test objects over
backgrounds from held-out textures only: a style shift at fixed content.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sassl.data.decode import ImageDecodeError, load_rgb

# class name -> stamp folders (relative to usr/share/tuxpaint/stamps), subfolders included
CLASSES = {
    "mammal": ["animals/mammals", "animals/marsupials"],
    "bird": ["animals/birds"],
    "fish": ["animals/fish"],
    "insect": ["animals/insects"],
    "fruit": ["food/fruit"],
    "vegetable": ["food/vegetables"],
    "flower": ["plants/flowers"],
    "vehicle": ["vehicles"],
    "tool": ["household/tools"],
}


@dataclass(frozen=True)
class ObjectsConfig:
    """size: output px; per_object: composites per object identity and split; test_fraction of identities;
    textures_in_train: also use half the textures as train/test backgrounds (the other half for test_shift).

    NOTE: by default train/test backgrounds are scene photos only: with distinctive textures behind the
    objects, both SSL views share a background that is easier to match than the object (the measured
    effect is in docs/RESULTS.md, "objects benchmark")."""

    size: int = 96
    per_object: int = 12
    test_fraction: float = 0.3
    seed: int = 0
    scale: tuple[float, float] = (0.65, 0.95)
    textures_in_train: bool = False

    def tag(self) -> str:
        return f"s{self.size}-n{self.per_object}-t{self.test_fraction}-seed{self.seed}-tex{int(self.textures_in_train)}"


def identity(stem: str) -> str:
    """Object identity of a stamp file: numbered variants (pig2, pig_2) belong to one object."""
    base = re.sub(r"[_-]?\d+$", "", stem.lower())
    return base or stem.lower()


def collect_stamps(stamps_root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Stamp files per class, and the identities dropped because they sit in two classes
    (e.g. a cement mixer filed under both vehicles and tools): their label would be ambiguous."""
    out = {}
    for cls, folders in CLASSES.items():
        files = []
        for f in folders:
            files += sorted((stamps_root / f).rglob("*.png"))
        if not files:
            raise FileNotFoundError(f"no stamps for class {cls} under {stamps_root}")
        out[cls] = files
    owners: dict[str, set[str]] = {}
    for cls, files in out.items():
        for f in files:
            owners.setdefault(identity(f.stem), set()).add(cls)
    ambiguous = sorted(i for i, c in owners.items() if len(c) > 1)
    return {cls: [f for f in files if identity(f.stem) not in ambiguous] for cls, files in out.items()}, ambiguous


def split_identities(stamps: dict[str, list[Path]], test_fraction: float, seed: int) -> dict[str, dict[str, list[Path]]]:
    """Per class, shuffle the object identities and hold out test_fraction of them (at least one)."""
    rng = random.Random(seed)
    splits: dict[str, dict[str, list[Path]]] = {"train": {}, "test": {}}
    for cls, files in stamps.items():
        groups: dict[str, list[Path]] = {}
        for f in files:
            groups.setdefault(identity(f.stem), []).append(f)
        ids = sorted(groups)
        rng.shuffle(ids)
        n_test = max(1, round(len(ids) * test_fraction))
        splits["test"][cls] = [f for i in ids[:n_test] for f in groups[i]]
        splits["train"][cls] = [f for i in ids[n_test:] for f in groups[i]]
    return splits


def _background(rng: random.Random, bg: Image.Image, size: int) -> Image.Image:
    side = rng.uniform(0.3, 1.0) * min(bg.size)
    side = max(8, int(side))
    x, y = rng.randint(0, bg.width - side), rng.randint(0, bg.height - side)
    return bg.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)


def _stamp_rgba(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        img = im.convert("RGBA")
    bbox = img.getchannel("A").getbbox()
    if bbox is None:
        raise ImageDecodeError(f"{path}: fully transparent stamp")
    return img.crop(bbox)


def composite(rng: random.Random, stamp: Image.Image, bg: Image.Image, cfg: ObjectsConfig) -> Image.Image:
    """One sample: the stamp scaled so its longer side is U(scale) * size, flipped with p=0.5, placed
    uniformly at random fully inside a random square crop of `bg`."""
    size = cfg.size
    canvas = _background(rng, bg, size).convert("RGBA")
    longer = rng.uniform(*cfg.scale) * size
    s = longer / max(stamp.size)
    obj = stamp.resize((max(1, round(stamp.width * s)), max(1, round(stamp.height * s))), Image.LANCZOS)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
    x, y = rng.randint(0, size - obj.width), rng.randint(0, size - obj.height)
    canvas.alpha_composite(obj, (x, y))
    return canvas.convert("RGB")


def build_objects(stamps_root: Path, backgrounds: list[Path], shift_backgrounds: list[Path],
                  cfg: ObjectsConfig) -> dict:
    """Returns {'classes', 'splits': {split: {'images' uint8 (N,3,S,S), 'labels', 'objects'}}, 'meta'}."""
    if not backgrounds or not shift_backgrounds:
        raise ValueError("objects: need backgrounds for train/test and held-out ones for test_shift")
    rng = random.Random(cfg.seed)
    classes = list(CLASSES)
    stamps, ambiguous = collect_stamps(stamps_root)
    splits = split_identities(stamps, cfg.test_fraction, cfg.seed)
    bg_imgs = [load_rgb(p) for p in backgrounds]
    shift_imgs = [load_rgb(p) for p in shift_backgrounds]
    out = {}
    for split, bgs in (("train", bg_imgs), ("test", bg_imgs), ("test_shift", shift_imgs)):
        files_by_class = splits["train" if split == "train" else "test"]
        images, labels, objects = [], [], []
        for label, cls in enumerate(classes):
            for f in files_by_class[cls]:
                stamp = _stamp_rgba(f)
                for _ in range(cfg.per_object):
                    img = composite(rng, stamp, bgs[rng.randrange(len(bgs))], cfg)
                    images.append(np.asarray(img, np.uint8))
                    labels.append(label)
                    objects.append(f"{cls}/{f.stem}")
        out[split] = {"images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                      "labels": torch.tensor(labels), "objects": objects}
    meta = {"config": cfg.__dict__ | {"scale": list(cfg.scale)},
            "train_objects": sorted({o for o in out["train"]["objects"]}),
            "test_objects": sorted({o for o in out["test"]["objects"]}),
            "dropped_ambiguous": ambiguous, "backgrounds": [str(p.name) for p in backgrounds], "shift_backgrounds": [str(p.name) for p in shift_backgrounds]}
    return {"classes": classes, "splits": out, "meta": meta}
