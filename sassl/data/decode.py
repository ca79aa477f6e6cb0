"""Decoding images robustly: any PIL mode to RGB, corrupt files skipped and counted."""
from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
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
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
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
    return img if img.mode == "RGB" else img.convert("RGB")


EXIF_ORIENTATION = 0x0112
_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError)


def _check_size(path: Path, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise ImageDecodeError(f"{path}: {w}x{h} is too large (> {MAX_PIXELS} pixels)")
    if min(w, h) < MIN_SIDE:
        raise ImageDecodeError(f"{path}: {w}x{h} is too small (both sides need >= {MIN_SIDE} px)")


@contextmanager
def _decoding(path: Path):
    """Any failure to read `path` as an image -> ImageDecodeError naming the file."""
    try:
        yield
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except _ERRORS as e:
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def load_rgb(path: str | os.PathLike, square: int = 0) -> Image.Image:
    """Open `path` as an RGB PIL image; raise ImageDecodeError (naming the file) if it can't be used.
    `square` > 0: a JPEG is decoded only as far as a centre square of that side needs (PIL's draft mode:
    libjpeg's 1/2, 1/4, 1/8 scaling), for center_square(img, square)."""
    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        _check_size(path, *im.size)
        if square and im.format == "JPEG":
            side = min(im.size)
            im.draft(im.mode, (math.ceil(square * im.width / side), math.ceil(square * im.height / side)))
        im.load()
        return to_rgb(im)


def load_for_crops(path: str | os.PathLike, plan: Callable[[int, int], tuple[int, int]],
                   encoded: bool = False) -> Image.Image | torch.Tensor:
    """Decode `path` only as far as the crops to be cut from it need.

    plan(w, h) is called once with the image's full upright size, before anything is decoded, and returns the
    smallest size the crops need. A JPEG that can be decoded at 1/2, 1/4 or 1/8 scale and still be that big
    comes back as that reduced RGB PIL image (PIL's draft mode: libjpeg's DCT scaling); any other JPEG as a
    full-size (3, H, W) uint8 tensor from torchvision's decoder (libjpeg-turbo, EXIF rotation applied);
    other formats as a full-size RGB PIL image. `encoded`: every JPEG without an EXIF rotation comes back
    undecoded, as its file's bytes (1-D uint8 tensor), for decoding on the GPU. ImageDecodeError names the file when it can't be used."""
    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        _check_size(path, *im.size)
        orientation = im.getexif().get(EXIF_ORIENTATION, 1) if im.format == "JPEG" else 1
        w, h = (im.height, im.width) if orientation in (5, 6, 7, 8) else im.size
        want = plan(w, h)
        if im.format != "JPEG":
            im.load()
            return to_rgb(im)
        # NOTE: nvJPEG does not apply EXIF orientation (torchvision applies it on the CPU only), so a rotated
        # JPEG's crop boxes, drawn on its upright size, would not fit the stored image: those decode here
        if encoded and orientation == 1:
            return torch.from_numpy(np.frombuffer(path.read_bytes(), dtype=np.uint8).copy())
        if orientation == 1 and min(w // want[0], h // want[1]) >= 2:
            im.draft(im.mode, want)
            im.load()
            return to_rgb(im)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        # NOTE: torchvision 0.29 (the locked version) deprecates its image decoders in favour of TorchCodec's;
        # they work and are libjpeg-turbo, 2x PIL's decode here. Move when the lock moves past them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8."""
    return torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


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
