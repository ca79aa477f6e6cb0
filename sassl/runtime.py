"""Where a run executes: the device and the code version, recorded in every run's config.json."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

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


def git_commit() -> str | None:
    """The commit of the sassl checkout, or None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def terminal_line(text: str) -> None:
    """One progress line where a person watching the job sees it. In a Jupyter kernel (JupyterLab or
    papermill) the kernel's own stderr is the terminal that launched it, and ipykernel also copies what is
    written there into the cell's output; elsewhere, stdout."""
    if "ipykernel" in sys.modules and sys.__stderr__ is not None:
        sys.__stderr__.write(text + "\n")
        sys.__stderr__.flush()
    else:
        print(text, flush=True)


def duration(seconds: float) -> str:
    """'42 s', '7 min 05 s', '2 h 03 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def read_metrics(path) -> list[dict]:
    """The rows of a run's metrics.jsonl (per-step losses, per-epoch summaries and kNN monitors)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_table(rows: list[dict], stem) -> None:
    """rows as stem.json and stem.csv (columns in first-seen order); creates the folder."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
