"""Style banks: pre-computed style embeddings of an external style set, saved with their metadata."""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from tqdm.auto import tqdm

from sassl import dist
from sassl.data import get_dataset, image_paths
from sassl.data.decode import DecodeReport, ImageDecodeError, center_square, load_rgb, to_tensor
from sassl.data.index import signature
from sassl.data.registry import PBN_ENV
from sassl.paths import atomic_file, cache_dir
from sassl.stylizer.networks import STYLE_DIM, Stylizer

BANK_FORMAT = 1


class StyleBankError(ValueError):
    """A style bank file is missing, malformed, or was built with other weights."""


@dataclass
class StyleBank:
    """embeddings: (M, 100) float32; meta: source, count, image_size, weights_sha256, names, skipped."""

    embeddings: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        e = self.embeddings
        if e.ndim != 2 or e.shape[1] != STYLE_DIM or len(e) == 0:
            raise StyleBankError(f"style bank embeddings must be (M>0, {STYLE_DIM}), got {tuple(e.shape)}")
        if not torch.isfinite(e).all():
            raise StyleBankError("style bank embeddings contain NaN or inf")

    def __len__(self) -> int:
        return len(self.embeddings)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            torch.save({"format": BANK_FORMAT, "embeddings": self.embeddings.cpu().float(), "meta": self.meta}, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, weights_sha256: str | None = None) -> "StyleBank":
        """Load and check a bank; with `weights_sha256`, refuse banks embedded by other predictor weights."""
        path = Path(path)
        if not path.is_file():
            raise StyleBankError(f"{path}: no such style bank; build one with `sassl style-bank build SOURCE --out {path}`")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise StyleBankError(f"{path}: not a readable style bank ({type(e).__name__}: {e})") from None
        if not isinstance(data, dict) or data.get("format") != BANK_FORMAT or "embeddings" not in data:
            raise StyleBankError(f"{path}: not a sassl style bank (format {BANK_FORMAT}); rebuild it")
        meta = data.get("meta", {})
        if meta.get("count") != len(data["embeddings"]):
            raise StyleBankError(f"{path}: metadata says {meta.get('count')} styles, file holds {len(data['embeddings'])}")
        if weights_sha256 and meta.get("weights_sha256") != weights_sha256:
            raise StyleBankError(f"{path}: embedded with predictor weights {meta.get('weights_sha256', '?')[:12]}, "
                                 f"current weights are {weights_sha256[:12]}; rebuild the bank")
        return cls(data["embeddings"].float(), meta)


def _image_loaders(source: str) -> tuple[list[tuple[str, Callable[[], Image.Image]]], str]:
    """(name, loader) per image of a folder, file or dataset name; and where the images really came from."""
    path = Path(source)
    if path.exists():
        return [(str(p), functools.partial(load_rgb, p)) for p in image_paths(source)], str(path)
    try:
        ds = get_dataset(source, split="all")
    except KeyError as e:
        raise FileNotFoundError(f"style source {source!r} is neither a folder, an image file, nor a dataset name "
                                f"({e.args[0].split('; ', 1)[-1]})") from None
    if ds.files is not None:
        loaders = [(str(p), functools.partial(load_rgb, p)) for p in ds.files]
    else:
        loaders = [(f"{source}[{i}]", functools.partial(ds.pil, i)) for i in range(len(ds))]
    return loaders, ds.meta.get("source_used", source)


@torch.no_grad()
def build_bank(stylizer: Stylizer, source: str, image_size: int = 256, batch_size: int = 32,
               weights_sha256: str = "", progress: bool = True, sample: int = 0, seed: int = 0) -> StyleBank:
    """Embed every image of `source` (folder, file or dataset name), centre-cropped and resized to image_size.

    Files that are not usable images are skipped, counted in meta['skipped'] and warned about;
    a source with no usable image raises. meta['source_used'] says where the images came from
    (e.g. the bundled paintings when 'pbn' has no local copy). `sample` > 0 embeds only a seeded
    subset of that many images.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    loaders, source_used = _image_loaders(source)
    if 0 < sample < len(loaders):
        keep = torch.randperm(len(loaders), generator=torch.Generator().manual_seed(seed))[:sample]
        loaders = [loaders[i] for i in sorted(keep.tolist())]
    device = next(stylizer.parameters()).device
    kept, skipped = [], []
    chunks: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush():
        if batch:
            chunks.append(stylizer.embed(torch.stack(batch).to(device)).float().cpu())
            batch.clear()

    for name, load in tqdm(loaders, desc=f"embedding styles from {source}", unit="img", disable=not progress):
        try:
            batch.append(to_tensor(center_square(load(), image_size)))
            kept.append(name)
        except ImageDecodeError as e:
            skipped.append((Path(name), str(e)))
        if len(batch) == batch_size:
            flush()
    flush()
    DecodeReport(kept=[Path(k) for k in kept], skipped=skipped).warn(f"style source {source}")
    if not kept:
        raise ValueError(f"style source {source}: none of its {len(loaders)} files is a usable image")
    emb = torch.cat(chunks)
    meta = {"source": str(source), "source_used": source_used, "count": len(emb), "image_size": image_size,
            "weights_sha256": weights_sha256, "names": kept, "skipped": len(skipped)}
    return StyleBank(emb, meta)


def bank_cache_path(source: str, weights_sha256: str, image_size: int) -> Path:
    """Where the bank of a folder, image file or dataset name is cached: keyed by the source (a folder by
    its absolute path and its index signature, a file by its mtime; 'pbn' by the folder it points to),
    the predictor weights and the image size."""
    path = Path(source)
    if path.is_dir():
        key = f"{path.resolve()}:{signature(path.resolve())}"
    elif path.is_file():
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
    else:
        key = f"{source}:{os.environ.get(PBN_ENV, '') if source == 'pbn' else ''}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "banks" / f"{path.name or source}-{tag}-{weights_sha256[:12]}-{image_size}.pt"


def load_bank(source: str, stylizer: Stylizer, image_size: int = 256, progress: bool = True) -> StyleBank:
    """The style bank a style source names: a bank file (.pt, refused when embedded by other predictor
    weights), or a folder, image file or dataset name: embedded once, then cached (bank_cache_path).
    Under torchrun rank 0 embeds and writes it while the other ranks wait, then they read it."""
    sha = getattr(stylizer, "weights_sha256", "")
    if str(source).endswith(".pt"):
        return StyleBank.load(source, weights_sha256=sha or None)
    path = bank_cache_path(source, sha, image_size)
    with dist.rank_zero_first():
        if path.is_file():
            try:
                return StyleBank.load(path, weights_sha256=sha or None)
            except StyleBankError as e:  # a stale or damaged cache is rebuilt, not trusted
                warnings.warn(f"rebuilding the style bank cache: {e}")
        who = f"rank {dist.rank()}: " if dist.is_dist() else ""
        print(f"sassl: {who}embedding the style source {source} into {path} (once; later runs read it)",
              file=sys.stderr, flush=True)
        bank = build_bank(stylizer, source, image_size, weights_sha256=sha, progress=progress)
        bank.save(path)
        return bank
