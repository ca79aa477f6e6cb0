"""`python -m sassl.bench index`: ImageNet's 1,281,167 + 50,000 files (hard links): the file index cold and cached,
the datasets built from it, and the memory their file lists take."""
from __future__ import annotations

import resource
import time
from pathlib import Path

from sassl.bench.common import cpu_name, fresh_cache, make_imagefolder, report, timed_index
from sassl.data import get_dataset


def bench_index(folder: str | Path, train: int = 1_281_167, val: int = 50_000, classes: int = 1000) -> dict:
    """ImageNet's file count: build its folder (hard links), then time the file index cold (walk) and warm
    (cached), the train/val datasets built from it, and the memory their file lists take."""
    t = time.perf_counter()
    root = make_imagefolder(folder, train, val, classes=classes, distinct=50)
    made = time.perf_counter() - t
    with fresh_cache() as tmp:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        index, cold, warm = timed_index(root)
        t = time.perf_counter()
        tr = get_dataset(f"imagefolder:{root}", split="train")
        va = get_dataset(f"imagefolder:{root}", split="val")
        build = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cache_mb = sum(p.stat().st_size for p in (tmp / "index").iterdir()) / 2**20
    return {"files": len(index), "train": len(tr), "val": len(va), "classes": len(tr.classes),
            "make_folder_s": round(made, 1), "index_cold_s": round(cold, 2), "index_warm_s": round(warm, 2),
            "datasets_s": round(build, 2),
            "file_list_mb": round((tr.files.rel.nbytes + va.files.rel.nbytes + index.rel.nbytes) / 2**20, 1),
            "index_cache_mb": round(cache_mb, 1), "peak_rss_growth_mb": round(rss1 - rss0),
            "cpu": cpu_name()}


def add_parser(sub) -> None:
    """The `index` subcommand and its flags."""
    p = sub.add_parser("index", help="file index and datasets of an ImageNet-size folder (1.28 M hard links)")
    p.add_argument("--folder", default="/tmp/sassl-imagenet-links")
    p.add_argument("--train", type=int, default=1_281_167)
    p.add_argument("--val", type=int, default=50_000)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench index ...`: run it and print (or write) the result."""
    return report(bench_index(args.folder, args.train, args.val), args.json)
