"""One way to get any dataset by name.

    get_dataset("objects", split="test_shift")     # bundled, built on first use
    get_dataset("imagefolder:/data/dtd/images")    # class-per-folder tree, or a flat folder (no labels)
    get_dataset("cifar10", download=True)          # torchvision; offline: a clear error saying where
    get_dataset("pbn")                             # $SASSL_PBN_DIR, else the bundled paintings (warned)
    get_dataset("objects:per_object=48")           # the objects benchmark built with other parameters

Each kind of name (KINDS) says which names are its, how to load a split, which splits it has, how to
prepare it and how `sassl data list` describes it.

Every dataset yields (image, label): image = transform(RGB PIL image), by default a (3, H, W) float
tensor in [0, 1]; label is an int, -1 where the data has none.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sassl.data.decode import IMAGE_SUFFIXES, ImageDecodeError, load_rgb, to_tensor
from sassl.data.index import FileList, folder_index
from sassl.data.objects import ObjectsConfig
from sassl.data.sets import SETS, bundled_splits, data_root, is_built, load_index, objects_variant, prepare_set, set_dir
from sassl.records import terminal_line
from sassl.storage import cache_dir

@dataclass(frozen=True)
class TorchvisionSet:
    cls: str          # torchvision.datasets class
    folder: str       # the folder its archive unpacks to
    size: str
    description: str
    splits: tuple[str, ...] = ("train", "test")


TORCHVISION = {
    "cifar10": TorchvisionSet("CIFAR10", "cifar-10-batches-py", "60,000 images", "32x32, 10 classes (170 MB download)"),
    "cifar100": TorchvisionSet("CIFAR100", "cifar-100-python", "60,000 images", "32x32, 100 classes (170 MB download)"),
    "stl10": TorchvisionSet("STL10", "stl10_binary", "113,000 images",
                            "96x96, 10 classes + 100k unlabelled (2.6 GB download)",
                            ("train", "test", "unlabeled", "train+unlabeled")),
}
PBN_ENV = "SASSL_PBN_DIR"


class Dataset(torch.utils.data.Dataset):
    """Images from files (decoded lazily; unusable ones skipped and counted) or from a uint8 tensor.

    files: list of paths, or images: (N, 3, H, W) uint8; labels: N ints (-1 = unlabelled).
    meta['source_used'] records where the images really came from.
    """

    def __init__(self, name: str, labels: list[int], classes: list[str], meta: dict | None = None,
                 files: list[Path] | None = None, images: torch.Tensor | None = None,
                 transform: Callable | None = None):
        if (files is None) == (images is None):
            raise ValueError("give exactly one of files / images")
        n = len(files) if files is not None else len(images)
        if n == 0:
            raise ValueError(f"dataset {name}: no images")
        if len(labels) != n:
            raise ValueError(f"dataset {name}: {n} images but {len(labels)} labels")
        self.name, self.labels, self.classes = name, list(labels), list(classes)
        self.meta = dict(meta or {})
        self.files, self.images = files, images
        self.transform = transform if transform is not None else to_tensor
        self.skipped: set[int] = set()
        self.skip_log: Path | None = None  # where a run lists the files it skips (its skipped.txt), else warnings

    def __len__(self) -> int:
        return len(self.labels)

    def pil(self, i: int) -> Image.Image:
        """Image i as an RGB PIL image (raises ImageDecodeError for an unusable file)."""
        if self.images is not None:
            return Image.fromarray(self.images[i].permute(1, 2, 0).numpy(), "RGB")
        return load_rgb(self.files[i])

    def usable(self, i: int, read: Callable[[Path], object] | None = None) -> tuple[int, object]:
        """(j, image j) for the first usable image from index i on (wrapping around). `read(path)` decodes a
        file instead of `pil` (a fast path raising ImageDecodeError alike); images held in memory come as PIL.

        NOTE: an unusable file is replaced by the next usable one (never a crash mid-epoch). It is appended to
        `skip_log` when set (a run's skipped.txt, which the run sums up once an epoch: report_skipped), else
        warned about; the count is per process (each DataLoader worker counts its own)."""
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self.skipped:
                continue
            try:
                return j, read(self.files[j]) if read is not None and self.images is None else self.pil(j)
            except ImageDecodeError as e:
                self.skipped.add(j)
                if self.skip_log is None:
                    warnings.warn(f"dataset {self.name}: skipping unusable image ({e}); {len(self.skipped)} skipped so far")
                else:
                    with open(self.skip_log, "a") as f:  # one short line per append: whole lines from every worker
                        f.write(f"{e}\n")
        raise ValueError(f"dataset {self.name}: none of its {len(self)} images is usable")

    def __getitem__(self, i: int):
        j, img = self.usable(i)
        return self.transform(img), self.labels[j]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def say_skipped(skip_log: Path, said: int | None, what: str) -> int:
    """One line for the files appended to `skip_log` (Dataset.skip_log) since `said` lines: how many, the first
    three with their reasons, where the whole list is. Returns the lines now said (said None: count the lines
    there already, say nothing)."""
    lines = skip_log.read_text().splitlines() if skip_log.is_file() else []
    if said is not None and len(lines) > said:
        new = lines[said:]
        terminal_line(f"{what} skipped {len(new)} unusable file(s) ({'; '.join(new[:3])}"
                      f"{' ...' if len(new) > 3 else ''}); {len(lines)} in all, listed in {skip_log}")
    return len(lines)


# ----------------------------------------------------------------------------- user folders

SPLIT_FOLDERS = ("train", "val", "test")  # subfolders that make a user folder a split layout


def folder_splits(root: Path) -> tuple[str, ...]:
    """The split subfolders of a user folder ('train', 'val', 'test' that exist), or ('all',) when it has
    none (one pool: a class-per-folder tree or a flat folder)."""
    found = tuple(d for d in SPLIT_FOLDERS if (root / d).is_dir())
    return found if "train" in found else ("all",)


def _images_below(index: FileList, prefix: str, where: Path) -> FileList:
    """The image files of a folder index whose relative path starts with `prefix` ('' for all)."""
    rel = index.rel
    keep = np.char.startswith(rel, prefix.encode()) if prefix else np.ones(len(rel), dtype=bool)
    keep &= np.isin(np.char.lower(np.char.rpartition(rel, b".")[:, 2]), [s[1:].encode() for s in IMAGE_SUFFIXES])
    if not keep.any():
        raise ValueError(f"{where}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return index.select(keep)


def _class_of(rel: np.ndarray, prefix: str) -> np.ndarray:
    """First folder level below `prefix` of each relative path (b'' for files directly in it)."""
    tail = np.char.partition(rel, prefix.encode())[:, 2] if prefix else rel
    first, sep, _ = np.char.partition(tail, b"/").T
    return np.where(sep == b"/", first, b"")


def _classes(index: FileList, prefix: str) -> set[str]:
    """Names of the folders directly below `prefix` that hold files."""
    rel = index.rel[np.char.startswith(index.rel, prefix.encode())]
    return {n.decode() for n in set(_class_of(rel, prefix).tolist()) if n}


def _class_tree(files: FileList, prefix: str, classes: list[str] | None = None) -> tuple[list[str], list[int]]:
    """(classes, labels): label = index of the first folder level below prefix (classes: those folders
    sorted, unless given); ([], all -1) when some file lies directly in prefix."""
    names = _class_of(files.rel, prefix)
    if (names == b"").any():
        return [], [-1] * len(files)
    classes = classes or sorted({n.decode() for n in set(names.tolist())})
    lookup = {c.encode(): i for i, c in enumerate(classes)}
    return classes, [lookup[n] for n in names.tolist()]


def imagefolder(path: str | os.PathLike, name: str | None = None, transform: Callable | None = None,
                split: str = "all") -> Dataset:
    """A user folder: a split layout (train/ plus val/ and/or test/, each a class-per-folder tree with one
    class-to-index map over all splits), or one pool: a class-per-folder tree (label = first folder level)
    or a flat folder (labels -1). Non-image files are left out by suffix; unreadable images are skipped
    when first read. The file list comes from a cached index (sassl.data.index), walked once per folder."""
    root = Path(path)
    splits = folder_splits(root)
    name = name or f"imagefolder:{root}"
    if splits == ("all",) and split not in ("all", "train"):  # a pool trains whole; it has nothing held out
        raise ValueError(f"{name}: no split {split!r}: the folder has no train/ + val/ or test/ subfolders, "
                         "so it is one pool (evaluation splits it, seeded and stratified)")
    if split not in ("all", "train") + splits:
        raise ValueError(f"{name}: no split {split!r}; splits: {', '.join(splits)} (or all)")
    index = folder_index(root)
    if splits == ("all",):
        files = _images_below(index, "", root)
        classes, labels = _class_tree(files, "")
        return Dataset(name, labels, classes, {"source_used": str(root), "split": "all"}, files=files,
                       transform=transform)
    # one class map over every split folder (a class missing from val/ keeps its train/ index)
    classes = sorted(set().union(*(_classes(index, f"{s}/") for s in splits)))
    wanted = splits if split == "all" else (split,)
    parts = [_images_below(index, f"{s}/", root / s) for s in wanted]
    files = FileList(index.root, np.concatenate([p.rel for p in parts]))
    labels = [label for s, p in zip(wanted, parts) for label in _class_tree(p, f"{s}/", classes)[1]]
    return Dataset(name, labels, classes, {"source_used": str(root), "split": split}, files=files,
                   transform=transform)


def parse_name(name: str) -> tuple[str, str | None]:
    """'objects@test_shift' -> ('objects', 'test_shift'); a name without '@' -> (name, None)."""
    base, at, split = name.partition("@")
    if at and not split:
        raise ValueError(f"dataset {name!r}: nothing after '@'; give NAME@SPLIT")
    return base, (split or None)


def held_out_split(name: str) -> str | None:
    """The split that tests a dataset when none is named: 'test', else 'val', else None (one pool)."""
    base, split = parse_name(name)
    if split:
        return split
    splits = splits_of(base)
    return next((s for s in ("test", "val") if s in splits), None)


def torchvision_root() -> Path:
    return Path(os.environ.get("SASSL_DATA_ROOT", cache_dir() / "data" / "torchvision"))


# ----------------------------------------------------------------------------- kinds of dataset names

def _folder_load(name, split, transform, root, download) -> Dataset:
    return imagefolder(name.split(":", 1)[1], transform=transform, split=split)


def _folder_rows() -> list[dict]:
    return [{"name": "imagefolder:PATH", "state": "needs a local path", "size": "-",
             "description": "any class-per-folder tree (ImageNet, DTD, iNat, ...) or a flat folder"}]


def _pbn_load(name, split, transform, root, download) -> Dataset:
    path = root or os.environ.get(PBN_ENV)
    if path:
        ds = imagefolder(path, "pbn", transform)
        ds.meta["source_used"] = f"Painter by Numbers at {path}"
        return ds
    warnings.warn(f"pbn: no local Painter by Numbers copy (set {PBN_ENV} or pass root=...); USING THE BUNDLED "
                  "'paintings' SET INSTEAD (~40 public-domain paintings, not the 79k-image PBN).", stacklevel=4)
    ds = _bundled_load("paintings", "all", transform, None, False)
    ds.name = "pbn"
    ds.meta["source_used"] = "bundled:paintings (fallback: no Painter by Numbers copy configured)"
    return ds


def _pbn_rows() -> list[dict]:
    pbn = os.environ.get(PBN_ENV)
    return [{"name": "pbn", "size": "79,433 paintings (full PBN)",
             "state": f"local copy at {pbn}" if pbn else f"needs a local path (${PBN_ENV}); falls back to paintings",
             "description": "Painter by Numbers (Kaggle), as an image folder"}]


def _torchvision_load(name, split, transform, root, download) -> Dataset:
    import torchvision.datasets as tvd

    spec = TORCHVISION[name]
    root = Path(root) if root else torchvision_root()
    if split not in spec.splits:
        raise ValueError(f"{name}: split must be one of {', '.join(spec.splits)}, got {split!r}")
    cls = getattr(tvd, spec.cls)
    try:
        if name == "stl10":
            ds = cls(str(root), split=split, download=download)
            images, labels = torch.from_numpy(ds.data), [int(v) for v in ds.labels]
        else:
            ds = cls(str(root), train=split == "train", download=download)
            images, labels = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), [int(v) for v in ds.targets]
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupted" in str(e).lower():
            raise FileNotFoundError(
                f"{name}: no data under {root / spec.folder}. With a network: get_dataset({name!r}, download=True) "
                f"or `sassl data prepare {name} --download`. Offline: copy the extracted archive ({spec.folder}/) "
                f"into {root} (or set SASSL_DATA_ROOT).") from None
        raise
    except (OSError, ValueError) as e:  # a download attempted without network
        raise FileNotFoundError(f"{name}: download failed ({e}); copy {spec.folder}/ into {root} by hand") from None
    return Dataset(name, labels, list(getattr(ds, "classes", [])),
                   {"source_used": str(root / spec.folder), "split": split}, images=images, transform=transform)


def _torchvision_prepare(name: str, download: bool) -> str:
    for split in ("train", "test"):
        get_dataset(name, split=split, download=download)
    return f"{name}: ready"


def _torchvision_rows() -> list[dict]:
    return [{"name": name, "size": spec.size, "description": spec.description,
             "state": "prepared" if (torchvision_root() / spec.folder).exists() else "downloadable (needs network)"}
            for name, spec in TORCHVISION.items()]


def _bundled_load(name, split, transform, root, download, folder: str | None = None) -> Dataset:
    folder = folder or name
    index = load_index(folder)
    pool = bundled_splits(index) == ("all",)  # one pool serves every split
    if not pool and split not in bundled_splits(index) and split != "all":
        raise ValueError(f"{name}: no split {split!r}; splits: {', '.join(bundled_splits(index))} (or all)")
    if index.get("storage") == "tensor":
        parts = [torch.load(set_dir(folder) / index["splits"][s], weights_only=True)
                 for s in (index["splits"] if split == "all" else [split])]
        d = {k: torch.cat([p[k] for p in parts]) for k in ("images", "labels")}
        objects = [o for p in parts for o in p["objects"]]
        return Dataset(name, d["labels"].tolist(), index["classes"],
                       index["meta"] | {"source_used": f"bundled:{folder}", "split": split, "objects": objects},
                       images=d["images"], transform=transform)
    items = [it for it in index["items"] if pool or split == "all" or it["split"] == split]
    return Dataset(name, [it["label"] for it in items], index["classes"],
                   index["meta"] | {"source_used": f"bundled:{name}", "split": "all" if pool else split,
                                    "groups": [it["group"] for it in items], "description": SETS[name].description},
                   files=[data_root() / it["file"] for it in items], transform=transform)


def _bundled_prepare(name: str, download: bool) -> str:
    return f"{name}: {prepare_set(name)} (contact sheet: {set_dir(name) / 'contact_sheet.png'})"


def _bundled_rows() -> list[dict]:
    import json

    rows = []
    for name, spec in SETS.items():
        built = is_built(name)
        n = json.loads((set_dir(name) / "manifest.json").read_text())["files"] if built else None
        rows.append({"name": name, "state": "prepared" if built else "fetchable (sassl data prepare)",
                     "size": f"{n} images" if built else "?", "description": spec.description})
    return rows


def objects_config(name: str) -> ObjectsConfig:
    """'objects:per_object=48,size=64' -> ObjectsConfig(per_object=48, size=64); unknown or malformed
    parameters raise, naming the ones there are."""
    known = {f.name: f.type for f in fields(ObjectsConfig)}
    values: dict = {}
    for part in filter(None, name.split(":", 1)[1].split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in known or key == "scale":
            raise ValueError(f"dataset {name!r}: expected objects:KEY=VALUE,... with KEY one of "
                             f"{', '.join(k for k in known if k != 'scale')}, got {part!r}")
        cast = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}[known[key]]
        try:
            values[key] = cast(value)
        except ValueError:
            raise ValueError(f"dataset {name!r}: {key} must be {known[key]}, got {value!r}") from None
    return ObjectsConfig(**values)


def _variant_load(name, split, transform, root, download) -> Dataset:
    return _bundled_load("objects", split, transform, root, download, folder=objects_variant(objects_config(name)))


def _variant_rows() -> list[dict]:
    return [{"name": "objects:KEY=VALUE,...", "state": "built on first use", "size": "-",
             "description": "the objects benchmark with other parameters (per_object, size, test_fraction, seed, "
                            "textures_in_train), e.g. objects:per_object=48"}]


@dataclass(frozen=True)
class Kind:
    """A kind of dataset name: which names are its, how to load one split (name, split, transform, root,
    download), the splits it has, how `sassl data prepare` readies it (None: nothing to prepare), and its
    rows in `sassl data list`."""

    owns: Callable[[str], bool]
    load: Callable[..., Dataset]
    splits: Callable[[str], tuple[str, ...]]
    prepare: Callable[[str, bool], str] | None
    rows: Callable[[], list[dict]]


KINDS: dict[str, Kind] = {
    "bundled": Kind(lambda n: n in SETS, _bundled_load, lambda n: bundled_splits(load_index(n)), _bundled_prepare,
                    _bundled_rows),
    "torchvision": Kind(lambda n: n in TORCHVISION, _torchvision_load, lambda n: TORCHVISION[n].splits,
                        _torchvision_prepare, _torchvision_rows),
    "pbn": Kind(lambda n: n == "pbn", _pbn_load, lambda n: ("all",), None, _pbn_rows),
    "objects variant": Kind(lambda n: n.startswith("objects:"), _variant_load,
                            lambda n: bundled_splits(load_index(objects_variant(objects_config(n)))), None,
                            _variant_rows),
    "imagefolder": Kind(lambda n: n.startswith("imagefolder:"), _folder_load,
                        lambda n: folder_splits(Path(n.split(":", 1)[1])), None, _folder_rows),
}


def kind_of(name: str) -> Kind:
    """The kind that owns dataset name `name` (no '@SPLIT'); unknown names raise, listing what exists."""
    for kind in KINDS.values():
        if kind.owns(name):
            return kind
    raise KeyError(f"unknown dataset {name!r}; available: {', '.join(dataset_names())}, imagefolder:PATH or "
                   "objects:KEY=VALUE,...")


def splits_of(name: str) -> tuple[str, ...]:
    """The splits a dataset has, e.g. ('train', 'test', 'test_shift'), or ('all',) for one pool. Bundled
    sets are prepared first if needed; torchvision sets need no download to answer."""
    base, _ = parse_name(name)
    return kind_of(base).splits(base)


def get_dataset(name: str, split: str | None = None, transform: Callable | None = None, root: str | None = None,
                download: bool = False) -> Dataset:
    """Any dataset by name (see module doc); `NAME@SPLIT` names the split, else `split` (default 'train').
    Unknown names raise, listing what exists; a split the data lacks raises, listing its splits."""
    name, named_split = parse_name(name)
    if named_split and split and split != named_split:
        raise ValueError(f"dataset {name}@{named_split}: also asked for split {split!r}; give one")
    return kind_of(name).load(name, named_split or split or "train", transform, root, download)


def prepare_dataset(name: str, download: bool = False) -> str:
    """Ready a dataset for offline use (`sassl data prepare NAME`); returns a line saying where it is."""
    kind = kind_of(name)
    if kind.prepare is None:
        raise ValueError(f"dataset {name!r}: nothing to prepare (it is read from where it is, or built on first "
                         f"use); preparable: {', '.join(list(SETS) + list(TORCHVISION))}")
    return kind.prepare(name, download)


def dataset_names() -> list[str]:
    return list(SETS) + list(TORCHVISION) + ["pbn"]


def dataset_table() -> list[dict]:
    """name, state, size, description for `sassl data list`: each kind's rows."""
    return [row for kind in KINDS.values() for row in kind.rows()]


def image_paths(source: str) -> list[Path]:
    """Files of a file-backed dataset by name, or of a folder (recursively), or one file."""
    path = Path(source)
    if path.is_dir():
        return list(folder_index(path))
    if path.is_file():
        return [path]
    try:
        ds = get_dataset(source, split="all")
    except KeyError:
        raise FileNotFoundError(f"{source!r} is neither a folder, an image file, nor a dataset name "
                                f"(datasets: {', '.join(dataset_names())})") from None
    if ds.files is None:
        raise ValueError(f"{source}: stored as tensors, not files; use get_dataset({source!r}) instead")
    return list(ds.files)
