"""The bundled sets, built once from the raw sources into `<cache>/data/sets/<name>/`.

Each set folder holds `index.json` (classes, items with file / label / split / group, meta), a
contact sheet, and `manifest.json`, written last: a folder without it is a half-finished build and is
built again from scratch. File paths in the
index are relative to `<cache>/data`, so images already unpacked from a package are not copied.
"""
from __future__ import annotations

import functools
import io
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sassl.data.sources import PACKAGES, prepare_source, source_dir
from sassl.data.decode import load_rgb
from sassl.data.formats import read_pat, read_rcc
from sassl.data.objects import ObjectsConfig, build_objects
from sassl.storage import cache_dir, exclusive_lock, sha256
from sassl.figures.sheet import contact_sheet

SET_FORMAT = 1
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_PHOTOS = ["apple.jpg", "baboon.jpg", "butterfly.jpg", "fruits.jpg", "HappyFish.jpg", "home.jpg",
                 "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "building.jpg", "aero3.jpg", "lena.jpg"]
OPENCV_ART = ["starry_night.jpg", "graf1.png", "smarties.png", "board.jpg"]
# photos without a salient animal, fruit or flower (those would contradict the pasted object's label)
SCENE_BACKGROUNDS = {"Dune", "Wood", "Aqua", "Storm", "GreenMeadow", "RainDrops", "Blinds", "building", "home"}
VAN_GOGH_DETAILS = ["PortraitOfPereTanguy", "Van_Gogh_The_Night_Cafe", "Eglise_dAuvers-sur-Oise", "VincentVanGoghBridge",
                    "VincentVanGogh0012", "VincentVanGogh0013", "Gogh4", "VincentVanGogh0019"]


def data_root() -> Path:
    return cache_dir() / "data"


def _item(path: Path, label: int = -1, split: str = "all", group: str = "") -> dict:
    return {"file": os.path.relpath(path, data_root()), "label": label, "split": split, "group": group or path.stem}


# ----------------------------------------------------------------------------- GCompris puzzles

def _qml_levels(qml: str) -> list[dict]:
    """The `levels` entries of a GCompris board file as dicts of strings."""
    return [dict(re.findall(r'"(\w+)"\s*:\s*"?([^",\n]+)"?', block)) for block in re.findall(r"\{([^{}]*)\}", qml)]


def rebuild_puzzle(qml: str, files: dict[str, bytes], image_prefix: str) -> tuple[str, Image.Image, float]:
    """Paste every piece at its centre (x, y are fractions of the board size) -> (title, painting, coverage).

    The painting is cropped to the pieces' extent (the board has margins); coverage is the fraction of
    that crop covered by some piece (1.0 = no hole)."""
    title = re.search(r'instruction:\s*qsTr\("([^"]*)"\)', qml)
    levels = _qml_levels(qml)
    bg = next(lv for lv in levels if lv.get("type") == "SHAPE_BACKGROUND_IMAGE")
    w, h = int(bg["width"]), int(bg["height"])
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    pieces = [lv for lv in levels if "x" in lv and "y" in lv]
    if not pieces:
        raise ValueError("puzzle board without pieces")
    for lv in pieces:
        piece = Image.open(io.BytesIO(files[image_prefix + lv["pixmapfile"].split("/", 1)[-1]])).convert("RGBA")
        cx, cy = float(lv["x"]) * w, float(lv["y"]) * h
        canvas.alpha_composite(piece, (round(cx - piece.width / 2), round(cy - piece.height / 2)))
    canvas = canvas.crop(canvas.getchannel("A").getbbox())
    coverage = float((np.asarray(canvas.getchannel("A")) > 0).mean())
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    return (title.group(1) if title else "untitled"), Image.alpha_composite(white, canvas).convert("RGB"), coverage


def build_paintings(stage: Path) -> dict:
    items = []
    gc = source_dir(PACKAGES["gcompris-qt-data"]) / "usr/share/gcompris-qt/rcc"
    files = read_rcc(gc / "paintings.rcc")
    prefix = "gcompris/src/activities/paintings/resource/"
    boards = sorted((k for k in files if k.startswith(prefix + "board/") and k.endswith(".qml")),
                    key=lambda k: int(re.search(r"board(\d+)_", k).group(1)))
    (stage / "images").mkdir(parents=True)
    for k in boards:
        title, img, coverage = rebuild_puzzle(files[k].decode(), files, prefix + "image/")
        if coverage < 0.98:
            raise ValueError(f"paintings: {k} rebuilt with holes ({coverage:.1%} covered)")
        out = stage / "images" / f"gcompris_{Path(k).stem}.png"
        img.save(out)
        items.append(_item(out, group=title))
    details = read_rcc(gc / "details.rcc")
    dprefix = "gcompris/src/activities/details/resource/image/"
    for name in VAN_GOGH_DETAILS:
        img = Image.open(io.BytesIO(details[f"{dprefix}{name}_background.webp"])).convert("RGB")
        out = stage / "images" / f"vangogh_{name}.png"
        img.save(out)
        items.append(_item(out, group=f"Van Gogh: {name}"))
    items.append(_item(source_dir(PACKAGES["opencv-doc"]) / OPENCV_DATA / "starry_night.jpg", group="Van Gogh: Starry Night"))
    return {"classes": [], "items": items, "meta": {"note": "GCompris puzzle paintings rebuilt from their pieces, "
                                                            "GCompris 'details' Van Gogh paintings, OpenCV's Starry Night"}}


def build_textures(stage: Path) -> dict:
    (stage / "images").mkdir(parents=True)
    pats = []
    for src in ("gimp-data", "gimp-data-extras"):
        root = source_dir(PACKAGES[src]) / "usr/share/gimp/2.0/patterns"
        pats += [(src, root, p) for p in sorted(root.rglob("*.pat"))]
    folders = sorted({p.relative_to(root).parts[0] for _, root, p in pats if len(p.relative_to(root).parts) > 1})
    items, skipped = [], []
    for src, root, p in pats:
        rel = p.relative_to(root)
        try:
            _, img = read_pat(p)
        except ValueError as e:
            skipped.append(str(e))
            continue
        out = stage / "images" / f"{src}_{'_'.join(rel.with_suffix('').parts)}.png"
        img.save(out)
        label = folders.index(rel.parts[0]) if len(rel.parts) > 1 else -1
        items.append(_item(out, label, group=rel.stem))
    return {"classes": folders, "items": items, "meta": {"skipped": skipped,
            "note": "GIMP patterns; labelled by their named folder where they have one, else -1"}}


def build_photos(stage: Path) -> dict:
    nature = sorted((source_dir(PACKAGES["mate-backgrounds"]) / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    ocv = source_dir(PACKAGES["opencv-doc"]) / OPENCV_DATA
    items = [_item(p) for p in nature] + [_item(ocv / n) for n in OPENCV_PHOTOS if (ocv / n).is_file()]
    return {"classes": [], "items": items, "meta": {"note": "MATE nature wallpapers and OpenCV sample photos"}}


def _opencv(names: list[str]) -> Callable[[Path], dict]:
    def build(stage: Path) -> dict:
        ocv = source_dir(PACKAGES["opencv-doc"]) / OPENCV_DATA
        return {"classes": [], "items": [_item(ocv / n) for n in names if (ocv / n).is_file()], "meta": {}}
    return build


def build_elpv(stage: Path, test_fraction: float = 0.25, seed: int = 0) -> dict:
    root = source_dir(PACKAGES["elpv-dataset"]) / "elpv_dataset/data"
    rows = [line.split() for line in (root / "labels.csv").read_text().splitlines() if line.strip()]
    grades = ["p0", "p0.33", "p0.67", "p1"]
    by_label: dict[int, list] = {}
    for path, prob, kind in rows:
        by_label.setdefault(round(float(prob) * 3), []).append((path, kind))
    rng = random.Random(seed)
    items = []
    for label in sorted(by_label):
        rows_l = by_label[label]
        rng.shuffle(rows_l)
        n_test = round(len(rows_l) * test_fraction)
        for i, (path, kind) in enumerate(rows_l):
            items.append(_item(root / path, label, "test" if i < n_test else "train", group=kind))
    items.sort(key=lambda it: it["file"])
    return {"classes": grades, "items": items, "meta": {
        "note": "solar-cell electroluminescence, defect probability graded 0, 1/3, 2/3, 1; group = mono/poly; "
                f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} train/test split, seed {seed}"}}


def _foolbox(prefix: str) -> Callable[[Path], dict]:
    def build(stage: Path) -> dict:
        root = source_dir(PACKAGES["foolbox"]) / "foolbox/data"
        files = sorted(root.glob(f"{prefix}_*"))
        ids = [int(re.search(r"_(\d+)\.\w+$", f.name).group(1)) for f in files]
        classes = sorted(set(ids))
        return {"classes": [str(c) for c in classes],
                "items": [_item(f, classes.index(i)) for f, i in zip(files, ids)],
                "meta": {"note": f"foolbox's {prefix} samples; class names are the dataset's class ids"}}
    return build


def _tiled(img: Image.Image, min_side: int = 256) -> Image.Image:
    """Repeat a small (tileable) pattern until both sides reach min_side."""
    nx, ny = -(-min_side // img.width), -(-min_side // img.height)
    if nx == 1 and ny == 1:
        return img
    out = Image.new("RGB", (img.width * nx, img.height * ny))
    for i in range(nx):
        for j in range(ny):
            out.paste(img, (i * img.width, j * img.height))
    return out


def build_objects_set(stage: Path, cfg: ObjectsConfig = ObjectsConfig()) -> dict:
    """Backgrounds: scene photos (+ half the textures if cfg.textures_in_train); test_shift: textures never
    seen behind training objects."""
    textures = load_index("textures")
    tex_paths = [data_root() / it["file"] for it in textures["items"]]
    rng = random.Random(cfg.seed)
    rng.shuffle(tex_paths)
    half = len(tex_paths) // 2
    bg_dir = stage / "backgrounds"
    bg_dir.mkdir(parents=True)

    def tiled_copies(paths, tag):
        out = []
        for i, p in enumerate(paths):
            q = bg_dir / f"{tag}_{i:03d}_{p.stem}.png"
            _tiled(load_rgb(p)).save(q)
            out.append(q)
        return out

    photos = [data_root() / it["file"] for it in load_index("photos")["items"]
              if Path(it["file"]).stem in SCENE_BACKGROUNDS]
    seen = photos + (tiled_copies(tex_paths[:half], "seen") if cfg.textures_in_train else [])
    held_out = tiled_copies(tex_paths[half:] if cfg.textures_in_train else tex_paths, "heldout")
    stamps = source_dir(PACKAGES["tuxpaint-stamps-default"]) / "usr/share/tuxpaint/stamps"
    data = build_objects(stamps, seen, held_out, cfg)
    for split, d in data["splits"].items():
        torch.save({"images": d["images"], "labels": d["labels"], "objects": d["objects"]}, stage / f"{split}.pt")
    shutil.rmtree(bg_dir)
    counts = {s: len(d["labels"]) for s, d in data["splits"].items()}
    return {"classes": data["classes"], "storage": "tensor", "splits": {s: f"{s}.pt" for s in data["splits"]},
            "items": [], "meta": data["meta"] | {"counts": counts, "note": "composited photo cut-outs; "
                                                  "train/test split by object identity; test_shift = test objects "
                                                  "over held-out textures"}}


@dataclass(frozen=True)
class BundledSet:
    name: str
    sources: tuple[str, ...]
    build: Callable[[Path], dict]
    description: str
    depends: tuple[str, ...] = ()


SETS: dict[str, BundledSet] = {s.name: s for s in [
    BundledSet("paintings", ("gcompris-qt-data", "opencv-doc"), build_paintings,
               "public-domain paintings (Renoir, Van Gogh, Hokusai, Dürer, ...): stand-in for Painter by Numbers"),
    BundledSet("textures", ("gimp-data", "gimp-data-extras"), build_textures,
               "GIMP patterns, labelled by folder where named: stand-in for DTD"),
    BundledSet("photos", ("mate-backgrounds", "opencv-doc"), build_photos, "unlabelled real photos"),
    BundledSet("objects", ("tuxpaint-stamps-default",), build_objects_set,
               "labelled composites of photo cut-outs (9 classes); splits train / test / test_shift",
               depends=("textures", "photos")),
    BundledSet("elpv", ("elpv-dataset",), build_elpv, "grey solar cells, 4 defect grades: distant-domain target"),
    BundledSet("foolbox-imagenet", ("foolbox",), _foolbox("imagenet"), "20 ImageNet val images (smoke tests)"),
    BundledSet("foolbox-cifar10", ("foolbox",), _foolbox("cifar10"), "20 CIFAR-10 images (smoke tests)"),
    BundledSet("foolbox-cifar100", ("foolbox",), _foolbox("cifar100"), "20 CIFAR-100 images (smoke tests)"),
    BundledSet("opencv-photos", ("opencv-doc",), _opencv(OPENCV_PHOTOS), "OpenCV sample photos"),
    BundledSet("opencv-art", ("opencv-doc",), _opencv(OPENCV_ART), "Starry Night, graffiti, smarties, circuit board"),
]}


def set_dir(name: str) -> Path:
    return data_root() / "sets" / name


def is_built(name: str) -> bool:
    return (set_dir(name) / "manifest.json").is_file()


def load_index(folder: str) -> dict:
    """The index of a bundled set (or a built objects variant), building the set first if needed."""
    if folder in SETS:
        prepare_set(folder)
    if not is_built(folder):
        raise FileNotFoundError(f"no built set {folder!r} under {data_root() / 'sets'}")
    return json.loads((set_dir(folder) / "index.json").read_text())


def bundled_splits(index: dict) -> tuple[str, ...]:
    """The splits of a built set's index ('all' for one pool), whether stored as tensors or as files."""
    if index.get("storage") == "tensor":
        return tuple(index["splits"])
    found = sorted({it["split"] for it in index["items"]})
    return ("all",) if found == ["all"] else tuple(found)


def objects_variant(cfg: ObjectsConfig) -> str:
    """Build `objects` with non-default parameters (cached under its own folder); returns the folder name."""
    if cfg == ObjectsConfig():
        prepare_set("objects")
        return "objects"
    folder = f"objects-{cfg.tag()}"
    prepare_set("objects", folder=folder, build=functools.partial(build_objects_set, cfg=cfg))
    return folder


def _sheet(index: dict, folder: Path) -> Image.Image:
    if index.get("storage") == "tensor":
        d = torch.load(folder / index["splits"]["train"], weights_only=True)
        rows = []
        for label in range(len(index["classes"])):
            first_of_object: dict[str, int] = {}  # one sample per distinct object
            for i in (d["labels"] == label).nonzero().squeeze(1).tolist():
                first_of_object.setdefault(d["objects"][i], i)
            idx = list(first_of_object.values())[:8]
            rows.append([Image.fromarray(d["images"][i].permute(1, 2, 0).numpy()) for i in idx])
        return contact_sheet(rows, tile=96, captions=[[c] * len(r) for c, r in zip(index["classes"], rows)])
    items = index["items"][:: max(1, len(index["items"]) // 40)][:40]
    imgs = [load_rgb(data_root() / it["file"]) for it in items]
    return contact_sheet([imgs[i:i + 8] for i in range(0, len(imgs), 8)], tile=128,
                         captions=[[it["group"][:20] for it in items[i:i + 8]] for i in range(0, len(items), 8)])


def prepare_set(name: str, folder: str | None = None, build: Callable[[Path], dict] | None = None) -> Path:
    """Build a bundled set once (sources fetched as needed); a no-op when its manifest exists.
    `folder`/`build` build a variant (e.g. objects at another size) under another folder name."""
    if name not in SETS:
        raise KeyError(f"unknown bundled set {name!r}; bundled sets: {', '.join(SETS)}")
    spec, out = SETS[name], set_dir(folder or name)
    if (out / "manifest.json").is_file():
        return out
    for dep in spec.depends:
        prepare_set(dep)
    for src in spec.sources:
        prepare_source(PACKAGES[src])
    # two processes on one cache (a study's lanes, on a fresh machine) build it once: the second waits, then reads
    with exclusive_lock(out.parent / f".{out.name}.lock", wait=f"building the bundled set {folder or name}"):
        if not (out / "manifest.json").is_file():
            _build_set(name, spec, out, build)
    return out


def _build_set(name: str, spec: BundledSet, out: Path, build: Callable[[Path], dict] | None) -> None:
    """The set's folder, index, contact sheet and manifest (written last: it marks the set complete)."""
    if out.exists():
        shutil.rmtree(out)  # no manifest: a half-finished earlier build
    out.mkdir(parents=True)
    index = (build or spec.build)(out) | {"format": SET_FORMAT, "name": name}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    _sheet(index, out).save(out / "contact_sheet.png")
    manifest = {"name": name, "format": SET_FORMAT, "description": spec.description,
                "sources": [{k: getattr(PACKAGES[s], k) for k in ("name", "version", "url", "sha256", "license")}
                            for s in spec.sources],
                "files": len(index["items"]) or sum(index["meta"].get("counts", {}).values()),
                "index_sha256": sha256(out / "index.json")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))  # written last: marks the set complete
