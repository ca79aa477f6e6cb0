"""`python -m sassl.bench gpu`: the one GPU measurement, a single short command (at most 5 minutes on one GPU;
exit 0 when every check holds), ready for the day a GPU is lent.

It runs the recipe's training step (MoCo v2, ResNet-50 by default, bf16 autocast from compute capability
8.0) on CUDA and checks, in one run:
  - SASSL synchronous against --sassl-async (batch k+1 stylized on a side stream): the same losses for a
    fixed seed, within 1e-3 relative;
  - the fast loader path (JPEG decoded by the CPU) against device decoding (nvJPEG on its own stream): the
    same crops within 2 grey levels on average, an EXIF-rotated JPEG included;
  - no host sync in steady-state steps: torch.cuda.set_sync_debug_mode("error") over them, except the
    step's one deliberate loss read;
  - the peak memory of a step against the planner's prediction (sassl.plan), within 25%;
and measures images/s of the step with and without SASSL (the paper's throughput table, A.8) and the
stylizer's images/s at 224 px in float32 and bfloat16. Writes JSON (--json).

It imports only torch, torchvision, numpy, PIL and sassl's core (the lent GPU machine has nothing else), makes
its own images, and reads the converted stylizer weights from a file (--weights; the cache's
`weights/ghiasi_*.pt`, about 10 MB); without one the stylizer has random weights, which changes no timing
and no check. Without CUDA it says so in one line and measures nothing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sassl.data.loader import DeviceDecoder, TwoCrops, collate_encoded
from sassl.data.registry import Dataset
from sassl.learners import create_learner
from sassl.optim import make_optimizer
from sassl.plan import tensor_bytes, trace_step
from sassl.stylizer import SASSL, Stylizer, stylize
from sassl.training.config import config_from_dict, learner_settings
from sassl.precision import autocast_dtype, resolve_precision
from sassl.training.step import prepare_batch, prepared_ahead, train_step
from sassl.views import VIEWS, TwoViews

SYNC_TOL = 1e-3  # relative loss difference allowed between synchronous and asynchronous SASSL (bf16 kernels)
PLAN_TOL = 0.25  # relative difference allowed between the measured and the planned peak memory


def stylizer_from(weights: str | None, device: torch.device) -> Stylizer:
    """The stylizer with the converted weights in `weights` (a state saved by sassl.stylizer.weights), or with
    random weights when none is given."""
    st = Stylizer()
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        st.predictor.load_state_dict(state["predictor"], strict=True)
        st.transformer.load_state_dict(state["transformer"], strict=True)
    return st.eval().requires_grad_(False).to(device)


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n JPEGs of smooth random colour fields (500 x 375, quality 90); the first carries EXIF orientation 6."""
    g = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = (g.random((6, 8, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        exif = Image.Exif()
        if i == 0:
            exif[0x0112] = 6
        path = folder / f"{i:04d}.jpg"
        img.save(path, quality=90, exif=exif)
        paths.append(path)
    return paths


def _steps(model, views, opt, batches, dtype, device, ahead: bool, seed: int, sync_debug: bool = False
           ) -> tuple[list[float], float]:
    """Train on `batches` (uint8 crop pairs on the device); the per-step losses and the images/s of the steps
    after the first two (warm-up: cuDNN's autotuning; CUDA's peak memory statistics restart after them). With sync_debug (CUDA), a host sync anywhere in those
    steps (preparing the batch, SASSL, the step) but the loss read raises."""
    def prepare(batch, step):
        return prepare_batch(views, batch[0], batch[1], torch.Generator().manual_seed(seed * 1_000_003 + step))

    it = prepared_ahead(iter(batches), prepare, 0, device, ahead)
    losses, t0, n, step = [], None, 0, 0
    while True:
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)  # the steady state's peak, not cuDNN's autotuning
            t0 = time.perf_counter()
        debug = sync_debug and device.type == "cuda" and step >= 2
        if debug:
            torch.cuda.set_sync_debug_mode("error")
        try:
            prep = next(it, None)
            if prep is None:
                break
            loss, _ = train_step(model, views, opt, prep, 0.01, 0.99, dtype)
        finally:
            if debug:
                torch.cuda.set_sync_debug_mode(0)
        losses.append(float(loss))  # the step's one deliberate host read
        if step >= 2:
            n += sum(len(p.crop1) for p in prep)
        step += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return losses, n / max(1e-9, time.perf_counter() - t0) if t0 else 0.0


def _learner(cfg_values: dict, device: torch.device):
    cfg = config_from_dict(cfg_values)
    torch.manual_seed(0)
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, image_size=cfg.image_size,
                           **learner_settings(cfg)).to(device, memory_format=torch.channels_last)
    return cfg, model, make_optimizer(model, cfg.optimizer, 0.01, cfg.weight_decay)


def check_host_sync(values: dict, dev: torch.device, stylizer, batches: list, dtype, size: int, on: bool) -> dict:
    """No host sync in steady-state steps (SASSL on, prepared ahead: every path of a step), under
    torch.cuda.set_sync_debug_mode("error"), on a run of its own (the debug mode slows the timed runs)."""
    if not on:
        return {"checked": False, "ok": True, "why": "CPU"}
    cfg, model, opt = _learner(values, dev)
    views = TwoViews(VIEWS[cfg.views], sassl=SASSL(stylizer, source="batch", p=cfg.p, embed_size=size)).to(dev)
    try:
        _steps(model, views, opt, batches[:6], dtype, dev, ahead=True, seed=0, sync_debug=True)
        return {"checked": True, "ok": True}
    except RuntimeError as e:  # the first host sync, with where it happened
        return {"checked": True, "ok": False, "error": str(e)[-3000:]}


def sassl_runs(values: dict, dev: torch.device, stylizer, batches: list, dtype, size: int) -> dict:
    """Training steps with SASSL off, on (sync) and on, prepared ahead (async): per run its losses, images/s and
    peak memory above what was there (CUDA)."""
    cuda = dev.type == "cuda"
    runs = {}
    for name, sassl, ahead in (("off", False, False), ("sync", True, False), ("async", True, True)):
        if cuda:
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)  # the batches and the stylizer, already there
        cfg, model, opt = _learner(values, dev)
        op = SASSL(stylizer, source="batch", p=cfg.p, embed_size=cfg.embed_size or size) if sassl else None
        views = TwoViews(VIEWS[cfg.views], sassl=op).to(dev)
        losses, rate = _steps(model, views, opt, batches, dtype, dev, ahead, seed=0)
        runs[name] = {"losses": losses, "images_per_second": rate,
                      "peak_gb": (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 30 if cuda else None}
        del model, opt, views, op
    return runs


def check_decode(work: str | Path, size: int, dev: torch.device) -> dict:
    """Fast (CPU decode) vs device decoding, an EXIF-rotated JPEG among them."""
    cuda = dev.type == "cuda"
    paths = make_jpegs(Path(work) / "jpegs", 32)
    ds = Dataset("gpu-check", [0] * len(paths), ["x"], files=paths)
    fast, enc = TwoCrops(ds, size, seed=1), TwoCrops(ds, size, seed=1, decode="device")
    decoder = DeviceDecoder(size, dev)
    items = [enc[(0, i)] for i in range(len(paths))]
    t = time.perf_counter()
    c1, c2 = decoder(*collate_encoded(items)[:2])
    if cuda:
        torch.cuda.synchronize(dev)
    device_s = time.perf_counter() - t
    t = time.perf_counter()
    want = [fast[(0, i)] for i in range(len(paths))]
    fast_s = time.perf_counter() - t
    err = max(float((c1[i].float().cpu() - w[0].float()).abs().mean()) for i, w in enumerate(want))
    err = max(err, max(float((c2[i].float().cpu() - w[1].float()).abs().mean()) for i, w in enumerate(want)))
    out = {"max_mean_abs_difference": err, "ok": err <= 2.0, "exif_rotated_on_host": items[0][0].ndim == 4,
           "device_images_per_second": len(paths) / device_s, "cpu_images_per_second": len(paths) / fast_s}
    out["ok"] &= out["exif_rotated_on_host"]

    return out


def stylizer_rates(stylizer, dev: torch.device, g: torch.Generator, images: int, size: int) -> dict:
    """Stylizer images/s at 224 px (content embedded, then stylized with a bank code), float32 and bfloat16."""
    cuda = dev.type == "cuda"
    x = torch.rand(images, 3, size, size, generator=g).to(dev)
    z = torch.randn(images, 100, generator=g).to(dev)
    a = torch.full((images,), 0.2, device=dev)
    rates = {}
    for name, dt in (("float32", None), ("bfloat16", torch.bfloat16)):
        with torch.no_grad(), torch.autocast(dev.type, dtype=dt or torch.bfloat16, enabled=dt is not None):
            for k in range(4):  # one warm-up call, three timed
                if k == 1:
                    if cuda:
                        torch.cuda.synchronize(dev)
                    t = time.perf_counter()
                stylize(stylizer, x, z, stylizer.embed(x), a, a)
            if cuda:
                torch.cuda.synchronize(dev)
        rates[name] = round(3 * len(x) / (time.perf_counter() - t), 1)
    return rates


def run_checks(device: str = "cuda", backbone: str = "resnet50", batch: int = 256, size: int = 224,
               steps: int = 12, weights: str | None = None, work: str | Path = "/tmp/sassl-gpu-check",
               sync_debug: bool = True, plan_memory: bool = True, stylizer_images: int = 64,
               stylizer_size: int = 224) -> dict:
    """Every check and measurement of the module docstring, as a dict with 'ok' and, per check, its numbers.
    Runs on the CPU too (tests, at small sizes): there the host-sync check and the memory check are skipped."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    values = {"learner": "mocov2", "backbone": backbone, "small_images": False, "image_size": size,
              "batch_size": batch, "style": "batch", "precision": "auto"}
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "backbone": backbone, "batch": batch, "size": size, "steps": steps, "ok": True}
    dtype = autocast_dtype(resolve_precision("auto", dev))
    out["precision"] = str(dtype).replace("torch.", "") if dtype else "float32"
    stylizer = stylizer_from(weights, dev)
    out["stylizer_weights"] = weights or "random (no --weights given)"
    g = torch.Generator().manual_seed(0)
    batches = [tuple(torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8).to(dev)
                     for _ in range(2)) for _ in range(steps)]

    out["host_sync"] = check_host_sync(values, dev, stylizer, batches, dtype, size, cuda and sync_debug)
    runs = sassl_runs(values, dev, stylizer, batches, dtype, size)
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(runs["async"]["losses"], runs["sync"]["losses"]))
    out["sassl_async"] = {"max_relative_loss_difference": diff, "ok": diff <= SYNC_TOL}
    out["throughput"] = {k: round(v["images_per_second"], 1) for k, v in runs.items()}
    out["throughput"]["sassl_overhead"] = round(1 - runs["sync"]["images_per_second"] /
                                                max(1e-9, runs["off"]["images_per_second"]), 3)

    out["decode"] = check_decode(work, size, dev)
    # peak memory of a SASSL step against the planner (CUDA only: the CPU has no allocator statistics)
    if cuda and plan_memory:
        planned = trace_step(config_from_dict(values), batch, batch, dtype).peak / 2 ** 30
        measured = runs["sync"]["peak_gb"] + tensor_bytes(list(stylizer.parameters())) / 2 ** 30  # as planned
        rel = abs(measured - planned) / planned
        out["memory"] = {"measured_gb": measured, "planned_gb": planned, "relative_difference": rel,
                         "ok": rel <= PLAN_TOL}

    out[f"stylizer_images_per_second_{stylizer_size}"] = stylizer_rates(stylizer, dev, g, stylizer_images, stylizer_size)
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict) and "ok" in v)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sassl.bench gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="converted stylizer weights (the cache's weights/ghiasi_*.pt)")
    ap.add_argument("--backbone", default="resnet50", help="any backbone name, timm:NAME included")
    ap.add_argument("--batch", type=int, default=256, help="images per step (one GPU)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=12, help="steps per run (the first two are warm-up)")
    ap.add_argument("--json", help="also write the result to this JSON file")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("sassl.bench gpu: no CUDA device here; nothing measured")
        return 0
    out = run_checks("cuda", args.backbone, args.batch, args.size, args.steps, args.weights)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print("sassl.bench gpu: " + ("every check holds" if out["ok"] else "a check FAILED (see 'ok': false above)"))
    return 0 if out["ok"] else 1
