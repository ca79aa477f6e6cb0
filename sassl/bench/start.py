"""`python -m sassl.bench start`: `sassl pretrain` on a generated ImageNet-layout folder (default 40,000 + 1,000
JPEGs): file index cold/warm, wall time of a 3-step run with its kNN monitor passes, peak memory of the trainer."""
from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

import torch

from sassl.bench.common import cpu_name, fresh_cache, make_imagefolder, report, timed_index
from sassl.interrupt import sassl_child


def bench_start(folder: str | Path, train: int = 40_000, val: int = 1_000, image_size: int = 64, steps: int = 3,
                extra: tuple[str, ...] = ()) -> dict:
    """`sassl pretrain` on a generated ImageNet-layout folder, as a fresh process: file index built cold
    and read warm, then `steps` steps with the kNN monitor at the start and end; wall time and the peak
    resident memory of the largest process (the trainer; its loader workers are smaller)."""
    t = time.perf_counter()
    root = make_imagefolder(folder, train, val)
    made = time.perf_counter() - t
    with fresh_cache() as tmp:
        index, cold, warm = timed_index(root)
        cmd, env = sassl_child("pretrain", "--name", "start", "--runs-dir", str(tmp), "--dataset", f"imagefolder:{root}",
                               "--max-steps", str(steps), "--batch-size", "32", "--style", "none", "--image-size",
                               str(image_size), *extra)
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)  # inherits the fresh SASSL_CACHE
        wall = time.perf_counter() - t
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        resolved = json.loads((tmp / "start" / "config.json").read_text())["resolved"]
    return {"files": len(index), "make_folder_s": round(made, 1), "index_cold_s": round(cold, 2),
            "index_warm_s": round(warm, 3), "train_images": resolved["train_images"],
            "knn_monitor": resolved["knn_monitor"], "steps": steps, "image_size": image_size, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak_mb), "cpu": cpu_name(),
            "threads": torch.get_num_threads()}


def add_parser(sub) -> None:
    """The `start` subcommand and its flags."""
    p = sub.add_parser("start", help="sassl pretrain's start on a generated ImageNet-layout folder: index, memory")
    p.add_argument("--folder", default="/tmp/sassl-scale", help="where the generated folder is (re)used")
    p.add_argument("--train", type=int, default=40_000)
    p.add_argument("--val", type=int, default=1_000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench start ...`: run it and print (or write) the result."""
    return report(bench_start(args.folder, args.train, args.val, steps=args.steps), args.json)
