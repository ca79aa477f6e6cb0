"""What the benchmarks share: the CPU's name, rates and interleaved measurements, peak memory, real photo
batches, a generated ImageNet-layout folder (real JPEGs re-encoded, hard links for bulk), a fresh cache folder."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sassl.data import image_paths
from sassl.data.decode import center_square, load_rgb, to_tensor
from sassl.data.index import FileList, folder_index
from sassl.precision import cpu_flags, cpu_native_bf16


def cpu_name() -> str:
    """The CPU's model name (lscpu's), with whether it has AVX-512: benchmark numbers are per machine."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        return f"{name} ({'AVX-512' if 'avx512f' in info else 'AVX2, no AVX-512' if 'avx2' in info else 'no AVX2'})"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_peak_gflops(threads: int, dtype: str = "fp32") -> tuple[float, str]:
    """This CPU's peak GFLOP/s for `threads` cores, and how it was computed: cores x FLOPs per cycle x clock
    (/proc/cpuinfo's 'cpu MHz'). FLOPs per cycle: two FMA pipes of 256 bits (Zen 3 and 4, most x86 cores; AVX-512
    on Zen 4 runs on them in two halves): 2 x 8 float32 lanes x 2 (multiply and add) = 32; bf16 dot products
    (avx512_bf16) do twice the lanes: 64; without AVX2, 16. An Intel core with two 512-bit FMA units doubles these:
    the share of peak printed is then an upper bound."""
    mhz = 0.0
    with contextlib.suppress(OSError, ValueError):
        mhz = float(next(line.split(":")[1] for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("cpu MHz")))
    per_cycle = 32 if "avx2" in cpu_flags() else 16
    if dtype == "bf16" and cpu_native_bf16():
        per_cycle *= 2
    how = f"{threads} cores x {per_cycle} FLOP/cycle ({dtype}) x {mhz / 1000:.2f} GHz"
    return threads * per_cycle * mhz / 1000, how


def rate(fn, n_images: int, min_time: float, min_reps: int = 3) -> float:
    """Images/s: one warm-up call, then repeat until min_time and min_reps; the median rate."""
    fn()
    rates, start = [], time.perf_counter()
    while len(rates) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t))
    return float(np.median(rates))


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated on a CUDA device, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def real_batch(n: int, size: int) -> torch.Tensor:
    paths = image_paths("opencv-photos")
    return torch.stack([to_tensor(center_square(load_rgb(paths[i % len(paths)]), size)) for i in range(n)])


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Rates of several measurements taken in turns (a warm-up call each, then `repeats` rounds of one call
    each), so a machine's drift hits them alike; ratios are then taken within a round."""
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            rates[k].append(fn())
    return rates


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, list[float]]:
    """The median of the per-round ratios num / den of two interleaved measurements, and their interquartile
    range (rounded to 2 decimals)."""
    ratio = [a / b for a, b in zip(num, den)]
    return float(np.median(ratio)), [round(float(np.percentile(ratio, q)), 2) for q in (25, 75)]


def report(row: dict, json_path: str | None) -> int:
    print(json.dumps(row, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(row, indent=1))
    return 0


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
def fresh_cache():
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


def timed_index(root: Path) -> tuple[FileList, float, float]:
    """The folder index, and the seconds it took cold (walked and written) and cached (read back)."""
    t = time.perf_counter()
    folder_index(root)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    index = folder_index(root)
    return index, cold, time.perf_counter() - t
