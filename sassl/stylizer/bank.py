"""Style banks: pre-computed style embeddings of an external style set, saved with their metadata."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sassl.data import image_paths
from sassl.data.decode import DecodeReport, ImageDecodeError, center_square, load_rgb, to_tensor
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": BANK_FORMAT, "embeddings": self.embeddings.cpu().float(), "meta": self.meta}, tmp)
        os.replace(tmp, path)
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


@torch.no_grad()
def build_bank(stylizer: Stylizer, source: str, image_size: int = 256, batch_size: int = 32,
               weights_sha256: str = "", progress: bool = True) -> StyleBank:
    """Embed every image of `source` (folder or bundled set), centre-cropped and resized to image_size.

    Files that are not usable images are skipped, counted in meta['skipped'] and warned about;
    a source with no usable image raises.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    paths = image_paths(source)
    device = next(stylizer.parameters()).device
    report = DecodeReport()
    chunks: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush():
        if batch:
            chunks.append(stylizer.embed(torch.stack(batch).to(device)).float().cpu())
            batch.clear()

    for p in tqdm(paths, desc=f"embedding styles from {source}", unit="img", disable=not progress):
        try:
            batch.append(to_tensor(center_square(load_rgb(p), image_size)))
            report.kept.append(p)
        except ImageDecodeError as e:
            report.skipped.append((p, str(e)))
        if len(batch) == batch_size:
            flush()
    flush()
    report.warn(f"style source {source}")
    if not report.kept:
        raise ValueError(f"style source {source}: none of its {len(paths)} files is a usable image")
    emb = torch.cat(chunks)
    meta = {"source": str(source), "count": len(emb), "image_size": image_size, "weights_sha256": weights_sha256,
            "names": [str(p) for p in report.kept], "skipped": len(report.skipped)}
    return StyleBank(emb, meta)
