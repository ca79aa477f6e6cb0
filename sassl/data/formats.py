"""Readers for the file formats the bundled data comes in: GIMP patterns (.pat) and Qt resources (.rcc)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def read_pat(path: str | os.PathLike) -> tuple[str, Image.Image]:
    """GIMP pattern -> (name, RGB image). Header: big-endian u32 header size, version, width, height,
    bytes per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), magic 'GPAT', then a NUL-terminated name."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a GIMP pattern")
    header_size, version, width, height, bpp = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT" or bpp not in (1, 2, 3, 4) or not (0 < width < 1 << 15 and 0 < height < 1 << 15):
        raise ValueError(f"{path}: not a GIMP pattern (magic {data[20:24]!r}, bpp {bpp}, {width}x{height})")
    name = data[24:header_size].split(b"\0")[0].decode("utf-8", "replace")
    n = width * height * bpp
    pixels = data[header_size:header_size + n]
    if len(pixels) != n:
        raise ValueError(f"{path}: truncated pixel data ({len(pixels)} of {n} bytes)")
    a = np.frombuffer(pixels, np.uint8).reshape(height, width, bpp)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bpp]
    img = Image.fromarray(a if bpp > 1 else a[:, :, 0], mode)
    if bpp in (2, 4):
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return name, img.convert("RGB")


def read_rcc(path: str | os.PathLike) -> dict[str, bytes]:
    """Qt binary resource (.rcc) -> {path inside: file bytes} (zlib entries decompressed).

    Layout: 'qres', then big-endian u32 version, tree offset, data offset, names offset. Tree nodes are
    14 bytes (version 1) or 22 (version >= 2): u32 name offset, u16 flags (2 dir, 1 zlib, 4 zstd); a
    directory has u32 child count and u32 first child index; a file has u32 data offset at bytes 10..14.
    A name is u16 length, u32 hash, UTF-16BE characters. Data is u32 size then bytes; zlib data has a
    further 4-byte length before the stream.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file (no 'qres' magic)")
    version, tree, dat, names = struct.unpack(">4I", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(off: int) -> str:
        (length,) = struct.unpack(">H", data[names + off:names + off + 2])
        return data[names + off + 6:names + off + 6 + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        base = tree + index * node_size
        name_off, flags = struct.unpack(">IH", data[base:base + 6])
        name = "" if index == 0 else name_at(name_off)
        path_here = f"{prefix}/{name}" if prefix else name
        if flags & 2:
            count, first = struct.unpack(">II", data[base + 6:base + 14])
            for child in range(first, first + count):
                walk(child, path_here)
            return
        (off,) = struct.unpack(">I", data[base + 10:base + 14])
        (size,) = struct.unpack(">I", data[dat + off:dat + off + 4])
        blob = data[dat + off + 4:dat + off + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: {path_here} is zstd-compressed; not supported")
        if flags & 1:
            blob = zlib.decompress(blob[4:])
        out[path_here] = blob

    walk(0, "")
    return out
