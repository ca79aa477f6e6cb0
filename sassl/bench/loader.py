"""`python -m sassl.bench loader`: the training loader's two-view images/s per worker core and bytes per batch,
full decoding (decode='full': PIL, float32; the old path, kept here to compare against) against the fast path
(crops drawn first, JPEG draft decode, uint8), in one run."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from sassl.bench.common import cpu_name, make_imagefolder, report
from sassl.data import get_dataset
from sassl.data.loader import TwoCrops, to_unit


class OldPathFloatCrops(torch.utils.data.Dataset):
    """The loader's old output: full PIL decoding and resizing (TwoCrops(decode="full")), float32 crops in [0, 1]."""

    def __init__(self, crops: TwoCrops):
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, key):
        c1, c2, label = self.crops[key]
        return to_unit(c1), to_unit(c2), label


def bench_loader(folder: str | Path, images: int = 2000, size: int = 224, batch: int = 64, repeats: int = 5,
                 per_repeat: int = 256, rank_batch: int = 512, gpu_rate: float = 1200.0) -> dict:
    """Two-view images/s of the training loader per worker core: full decoding (decode='full': PIL, float32
    crops) and the fast path (boxes drawn first, JPEG draft decode, uint8 crops), on a generated ImageNet-like
    folder. Both run in this process on one thread (what one worker does on one core), over the same keys,
    in alternating repeats; medians, and the median of the per-repeat ratios. Bytes per batch are measured on
    a collated batch and scaled to `rank_batch` pairs (the ImageNet recipe's per-GPU batch)."""
    root = make_imagefolder(folder, images, 10)
    ds = get_dataset(f"imagefolder:{root}", split="train")
    paths = {"old": OldPathFloatCrops(TwoCrops(ds, size, seed=0, decode="full")), "new": TwoCrops(ds, size, seed=0)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"old": [], "new": []}
    nbytes = {}
    try:
        for r in range(repeats):
            keys = [(r, (r * per_repeat + i) % len(ds)) for i in range(per_repeat)]
            for name, crops in paths.items():
                t = time.perf_counter()
                for s in range(0, len(keys), batch):
                    out = torch.utils.data.default_collate([crops[k] for k in keys[s:s + batch]])
                rates[name].append(len(keys) / (time.perf_counter() - t))
                nbytes[name] = sum(x.numel() * x.element_size() for x in out) * rank_batch / len(out[0])
    finally:
        torch.set_num_threads(threads)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    ratio = float(np.median([n / o for n, o in zip(rates["new"], rates["old"])]))
    return {"folder": str(root), "images": len(ds), "crop_px": size, "repeats": repeats, "images_per_repeat": per_repeat,
            "old_images_per_s_per_core": round(med["old"], 1), "new_images_per_s_per_core": round(med["new"], 1),
            "new_vs_old": round(ratio, 2),
            "old_mb_per_rank_batch": round(nbytes["old"] / 2**20, 1), "new_mb_per_rank_batch": round(nbytes["new"] / 2**20, 1),
            "rank_batch": rank_batch, "gpu_images_per_s": gpu_rate,
            "old_cores_per_gpu": math.ceil(gpu_rate / med["old"]), "new_cores_per_gpu": math.ceil(gpu_rate / med["new"]),
            "cpu": cpu_name(), "torch": torch.__version__}


def add_parser(sub) -> None:
    """The `loader` subcommand and its flags."""
    p = sub.add_parser("loader", help="training loader: two-view images/s per worker core and bytes per batch, old vs new")
    p.add_argument("--folder", default="/tmp/sassl-loader", help="where the generated folder is (re)used")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224, help="crop side, px")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--per-repeat", type=int, default=256, help="images per timed repeat and path")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench loader ...`: run it and print (or write) the result."""
    return report(bench_loader(args.folder, args.images, args.size, repeats=args.repeats, per_repeat=args.per_repeat),
                   args.json)
