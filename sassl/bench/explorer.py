"""`python -m sassl.bench explorer`: seconds per update of the stylization explorer (target: under 2 s)."""
from __future__ import annotations

import time

import numpy as np
import torch

from sassl.explorer import Explorer


def bench_explorer(n: int = 4, size: int = 256, reps: int = 5, device: str = "cpu",
                   styles=("paintings", "batch", "noise", "content")) -> list[dict]:
    """Seconds per explorer update (Explorer.run: crops, SASSL op, stylized-before-interpolation,
    two views, style-space PCA) for n bundled objects at `size` px; median over reps, new seed each."""
    ex = Explorer(device)
    contents = ex.contents("objects", n=n, seed=0)
    rows = []
    for style in styles:
        ex.run(contents, style, seed=0, size=size)  # warm-up (builds the style bank once)
        times = []
        for r in range(reps):
            t = time.perf_counter()
            ex.run(contents, style, seed=r + 1, size=size)
            times.append(time.perf_counter() - t)
        med = float(np.median(times))
        rows.append({"style": style, "images": n, "size": size, "seconds": round(med, 3), "vs_2s_budget": round(med / 2.0, 2)})
    return rows


def add_parser(sub) -> None:
    """The `explorer` subcommand and its flags."""
    p = sub.add_parser("explorer", help="seconds per update of the stylization explorer (target: < 2 s)")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench explorer ...`: run it and print (or write) the result."""
    rows = bench_explorer(args.n, args.size, args.reps, args.device)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| style source | images | px | seconds / update | / 2 s budget |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['images']} | {r['size']} | {r['seconds']:.2f} | {r['vs_2s_budget']:.2f} |")
    return 0
