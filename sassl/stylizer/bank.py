"""Style banks: pre-computed style embeddings of an external style set, saved with their metadata."""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from sassl import dist
from sassl.interrupt import ignore_in_workers
from sassl.data import get_dataset, image_paths, parse_name
from sassl.data.decode import DecodeReport, ImageDecodeError, center_square, load_rgb, to_tensor
from sassl.data.index import signature
from sassl.data.loader import loader_workers
from sassl.data.registry import PBN_ENV
from sassl.storage import atomic_file, cache_dir, rebuilding
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


def _image_loaders(source: str, image_size: int) -> tuple[list[tuple[str, Callable[[], Image.Image]]], str]:
    """(name, loader) per image of a folder, file or dataset name; and where the images really came from.
    Files are decoded only as far as an image_size centre square needs (JPEG draft mode). NOTE: that moves a
    painting's code by at most 0.27 at 128 px and 0.18 at 256 px, where two paintings lie about 4.7 and 4.1
    apart (median, the bundled art images), and decodes a large painting several times faster."""
    path = Path(source)
    if path.exists():
        return [(str(p), functools.partial(load_rgb, p, image_size)) for p in image_paths(source)], str(path)
    try:
        ds = get_dataset(source, split=None if parse_name(source)[1] else "all")  # NAME@SPLIT: that split
    except KeyError as e:
        raise FileNotFoundError(f"style source {source!r} is neither a folder, an image file, nor a dataset name "
                                f"({e.args[0].split('; ', 1)[-1]})") from None
    if ds.files is not None:
        loaders = [(str(p), functools.partial(load_rgb, p, image_size)) for p in ds.files]
    else:
        loaders = [(f"{source}[{i}]", functools.partial(ds.pil, i)) for i in range(len(ds))]
    return loaders, ds.meta.get("source_used", source)


class _Squares(torch.utils.data.Dataset):
    """(image (3, S, S) float in [0, 1], position, error) of each loader: decoded in DataLoader workers."""

    def __init__(self, loaders: list, positions: list[int], size: int):
        self.loaders, self.positions, self.size = loaders, positions, size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        try:
            return to_tensor(center_square(self.loaders[self.positions[k]][1](), self.size)), self.positions[k], ""
        except ImageDecodeError as e:
            return torch.zeros(3, self.size, self.size), self.positions[k], str(e)


@torch.no_grad()
def build_bank(stylizer: Stylizer, source: str, image_size: int = 256, batch_size: int = 32,
               weights_sha256: str = "", progress: bool = True, sample: int = 0, seed: int = 0,
               num_workers: int = 0) -> StyleBank:
    """Embed every image of `source` (folder, file or dataset name), centre-cropped and resized to image_size.

    Files that are not usable images are skipped, counted in meta['skipped'] and warned about;
    a source with no usable image raises. meta['source_used'] says where the images came from
    (e.g. the bundled paintings when 'pbn' has no local copy). `sample` > 0 embeds only a seeded
    subset of that many images. Under torch.distributed every rank embeds its share (every world-th
    image, decoded by `num_workers` DataLoader workers) and all ranks get the whole bank: call it on every
    rank at once, so that no rank waits in a collective while another embeds.
    """
    from tqdm.auto import tqdm  # here, not at the top: the SASSL op runs where tqdm is not installed

    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    loaders, source_used = _image_loaders(source, image_size)
    if 0 < sample < len(loaders):
        keep = torch.randperm(len(loaders), generator=torch.Generator().manual_seed(seed))[:sample]
        loaders = [loaders[i] for i in sorted(keep.tolist())]
    device = next(stylizer.parameters()).device
    mine = dist.shard(list(range(len(loaders))))
    workers = num_workers if len(mine) > 2 * batch_size else 0  # a worker costs more than a batch or two
    batches = torch.utils.data.DataLoader(_Squares(loaders, mine, image_size), batch_size=batch_size,
                                          num_workers=workers, worker_init_fn=ignore_in_workers)
    chunks, done, failed = [], [], []
    share = f" (rank {dist.rank()}'s 1/{dist.world_size()})" if dist.is_dist() else ""
    with tqdm(total=len(mine), desc=f"embedding styles from {source}{share}", unit="img", disable=not progress) as bar:
        for x, pos, err in batches:
            ok = torch.tensor([not e for e in err], dtype=torch.bool)
            if ok.any():
                chunks.append(stylizer.embed(x[ok].to(device)).float())
            done += pos[ok].tolist()
            failed += [(loaders[int(p)][0], e) for p, e in zip(pos.tolist(), err) if e]
            bar.update(len(pos))
    emb = torch.cat(chunks) if chunks else torch.zeros(0, STYLE_DIM, device=device)
    parts = dist.all_objects((done, failed))
    embs = dist.gather_uneven(emb)  # on the embedding device: NCCL takes CUDA tensors only
    order = torch.tensor([p for d, _ in parts for p in d], dtype=torch.long)
    emb = torch.cat([e.cpu() for e in embs])[order.argsort()]
    kept = [loaders[p][0] for p in sorted(order.tolist())]
    skipped = [(Path(n), e) for _, f in parts for n, e in f]
    DecodeReport(kept=[Path(k) for k in kept], skipped=skipped).warn(f"style source {source}")
    if not kept:
        raise ValueError(f"style source {source}: none of its {len(loaders)} files is a usable image")
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


def load_bank(source: str, stylizer: Stylizer, image_size: int = 256, progress: bool = True,
              num_workers: int = -1) -> StyleBank:
    """The style bank a style source names: a bank file (.pt, refused when embedded by other predictor
    weights), or a folder, image file or dataset name: embedded once, then cached (bank_cache_path).

    Under torchrun call it on every rank: when any rank cannot read the cache (none yet, damaged, stale, or a
    node-local cache on another node), all ranks embed it together, each its share (build_bank), rank 0
    writes it, and the first process of each node that still cannot read it writes that node's copy."""
    sha = getattr(stylizer, "weights_sha256", "")
    if str(source).endswith(".pt"):
        return StyleBank.load(source, weights_sha256=sha or None)
    path = bank_cache_path(source, sha, image_size)

    def read() -> StyleBank | None:
        if not path.is_file():
            return None
        try:
            bank = StyleBank.load(path, weights_sha256=sha or None)
        except StyleBankError as e:  # a stale or damaged cache is rebuilt, not trusted
            rebuilding(path, f"is not this source's bank ({e})")
            return None
        if bank.meta.get("image_size") != image_size or bank.meta.get("source") != str(source):
            rebuilding(path, f"holds the bank of {bank.meta.get('source')} at {bank.meta.get('image_size')} px, not "
                             f"{source} at {image_size} px")
            return None
        return bank

    def build() -> StyleBank:
        if dist.rank() == 0:
            over = f" over {dist.world_size()} ranks" if dist.is_dist() else ""
            print(f"sassl: embedding the style source {source} into {path}{over} (once; later runs read it)",
                  file=sys.stderr, flush=True)
        return build_bank(stylizer, source, image_size, weights_sha256=sha, progress=progress and dist.rank() == 0,
                          num_workers=loader_workers(num_workers))

    return dist.shared_cache(read, build, lambda bank: bank.save(path), path.is_file)
