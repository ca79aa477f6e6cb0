"""`python -m sassl.bench eval`: feature extraction images/s and linear-probe epoch time, the old path (images in
memory, kept here to compare against) vs the streamed float16 one, in one run; with --peak-folder, `sassl
evaluate` on 40,000 + 1,000 files: peak memory."""
from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import torch

from sassl.backbones import create_backbone
from sassl.bench.common import cpu_name, fresh_cache, make_imagefolder, report
from sassl.data import get_dataset
from sassl.data.decode import center_square, to_tensor
from sassl.eval.features import stream_features
from sassl.eval.linear import train_linear
from sassl.interrupt import sassl_child
from sassl.views import imagenet_normalize


def old_path_features_in_memory(backbone, ds, indices: list[int], size: int) -> torch.Tensor:
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
    with fresh_cache():
        t = time.perf_counter()
        old = old_path_features_in_memory(backbone, ds, idx, size)
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
           "new_features_mb": round(new.numel() * 2 / 2**20, 1), "cpu": cpu_name(), "threads": torch.get_num_threads()}
    if peak_folder:
        big = make_imagefolder(peak_folder, peak_train, peak_val)
        with fresh_cache() as tmp:
            cmd, env = sassl_child("evaluate", "random:resnet18", "--targets", f"imagefolder:{big}", "--protocols",
                                   "knn", "linear", "--seeds", "0", "--image-size", str(size), "--probe-epochs", "10",
                                   "--out", str(tmp / "eval"))
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
            row |= {"peak_files": peak_train + peak_val, "peak_wall_s": round(time.perf_counter() - t, 1),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                    "peak_feature_mb": round((peak_train + peak_val) * 512 * 2 / 2**20, 1)}
    return row


def add_parser(sub) -> None:
    """The `eval` subcommand and its flags."""
    p = sub.add_parser("eval", help="evaluation: feature extraction and probe epochs, old vs new; peak memory on 40k files")
    p.add_argument("--folder", default="/tmp/sassl-loader", help="where the generated folder is (re)used")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--peak-folder", default=None, help="also run sassl evaluate on a 40,000 + 1,000 file folder here")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench eval ...`: run it and print (or write) the result."""
    return report(bench_eval(args.folder, args.images, args.size, peak_folder=args.peak_folder), args.json)
