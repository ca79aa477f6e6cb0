"""Decoding images robustly: any PIL mode to RGB, corrupt files skipped and counted."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MIN_SIDE = 8
MAX_PIXELS = 100_000_000  # ~10k x 10k; bigger files are refused rather than exhausting memory


class ImageDecodeError(ValueError):
    """A file is not a usable image; the message names the file and why."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha is composited on white, 16-bit/float grey scaled to 8 bits, CMYK converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


EXIF_ORIENTATION = 0x0112


def load_rgb(path: str | os.PathLike, plan: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Open `path` as an RGB PIL image; raise ImageDecodeError (naming the file) if it can't be used.

    plan(w, h), if given, is called once with the image's full upright size before anything is decoded and
    returns the smallest size the caller will use; a JPEG is then decoded only that far (PIL's draft mode:
    libjpeg's DCT scaling by 1/2, 1/4 or 1/8, the largest that stays at least that big), so the image
    returned may be smaller than w x h. Images with an EXIF rotation are decoded in full."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageDecodeError(f"{path}: {im.width}x{im.height} is too large (> {MAX_PIXELS} pixels)")
            if plan is not None:
                orientation = im.getexif().get(EXIF_ORIENTATION, 1) if im.format in ("JPEG", "TIFF", "WEBP", "PNG") else 1
                want = plan(*((im.height, im.width) if orientation in (5, 6, 7, 8) else im.size))
                if im.format == "JPEG" and orientation == 1:
                    im.draft(im.mode, want)
            im.load()
            img = to_rgb(im)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if min(img.size) < MIN_SIDE:
        raise ImageDecodeError(f"{path}: {img.width}x{img.height} is too small (both sides need >= {MIN_SIDE} px)")
    return img


def to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1]."""
    return to_uint8(img).float().div_(255.0)


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image."""
    a = (x.detach().float().clamp(0, 1).mul(255).add(0.5).to(torch.uint8)).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to size x size (how styles are fed to the predictor)."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC, reducing_gap=3.0)


def walk(root: str | os.PathLike) -> list[str]:
    """Relative paths ('a/b.jpg') of every non-hidden file below root (hidden folders pruned), sorted.
    os.walk reads each directory once with scandir: no per-file stat."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        out.extend(prefix + f for f in filenames if not f.startswith("."))
    out.sort()
    return out


@dataclass
class DecodeReport:
    """What a folder decode kept and skipped (path, reason)."""

    kept: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def warn(self, what: str) -> None:
        if self.skipped:
            examples = "; ".join(f"{p.name}: {r}" for p, r in self.skipped[:3])
            warnings.warn(f"{what}: skipped {len(self.skipped)} of {len(self.kept) + len(self.skipped)} files "
                          f"that are not usable images ({examples})", stacklevel=3)
