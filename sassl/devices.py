"""Where tensors go: the device a process uses, one-copy host-to-device transfers of a batch's parameters, and
the padding that keeps data-dependent batch shapes few on CUDA."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' = this process's CUDA device (LOCAL_RANK under torchrun) when CUDA is available, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def pack(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    """Tensors of any dtypes -> one uint8 buffer (each part's bytes, 8-byte aligned) and its layout."""
    chunks, layout, offset = [], [], 0
    for key, t in parts.items():
        b = t.detach().contiguous().reshape(-1).view(torch.uint8)
        pad = -len(b) % 8
        chunks += [b, b.new_zeros(pad)]
        layout.append((key, t.dtype, tuple(t.shape), offset, len(b)))
        offset += len(b) + pad
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8), layout


def unpack(buf: torch.Tensor, layout: list) -> dict[str, torch.Tensor]:
    """pack's parts again, as views of `buf` (wherever it now is)."""
    return {key: buf[o:o + nb].view(dtype).view(shape) for key, dtype, shape, o, nb in layout}


def ship(parts: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """CPU tensors -> `device` in one host-to-device copy (packed into one pinned buffer), so a batch's sampled
    parameters cost one transfer and no wait, not a copy and a sync per tensor. On the CPU: `parts` as given."""
    if device.type == "cpu":
        return parts
    buf, layout = pack(parts)
    if device.type == "cuda":
        buf = buf.pin_memory()
    return unpack(buf.to(device, non_blocking=True), layout)


SHAPE_BUCKET = 32  # rows a data-dependent subset is padded to a multiple of, where cuDNN tunes per shape


def shape_bucket(device: torch.device) -> int:
    """The multiple that data-dependent batch sizes (the stylized subset, the blurred subset) are padded to on
    `device`: SHAPE_BUCKET on CUDA with cudnn.benchmark on, which tunes its kernels again for every new input
    shape (a batch of 512 at p = 0.8 draws some 70 different subset sizes), else 1 (no padding)."""
    return SHAPE_BUCKET if device.type == "cuda" and torch.backends.cudnn.benchmark else 1


def pad_rows(idx: torch.Tensor, multiple: int) -> torch.Tensor:
    """Indices `idx` (1-D) padded to a multiple of `multiple` by repeating idx[0]: per-image work on the padded
    rows gives the same results for the real ones, and the caller drops the rest ([:len(idx)])."""
    extra = -len(idx) % multiple
    return torch.cat([idx, idx[:1].expand(extra)]) if extra and len(idx) else idx
