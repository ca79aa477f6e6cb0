"""`python -m sassl.bench train`: images/s of full training steps per learner, each its own (views, heads,
optimiser, and DINO's local crops), with SASSL off, on (p=0.8, same batch) and on with the next batch prepared
ahead (--sassl-async), alternating in repeated rounds (medians), the process's peak memory, and the paper's MoCo
v2 step built from lightly's blocks as a reference. --backbone picks any backbone (e.g. resnet50x4 --batch 2
--size 32 --repeats 1 for one real step of the 375 M-parameter net, too slow for the test suite)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sassl.backbones import BACKBONES, create_backbone
from sassl.bench.common import cpu_peak_gflops, interleaved, paired_ratio, peak_memory_gb, real_batch
from sassl.learners import create_learner
from sassl.optim import make_optimizer
from sassl.plan import trace_step
from sassl.stylizer import make_style_op, pretrained
from sassl.training.config import config_from_dict, learner_settings, local_size
from sassl.training.step import prepare_batch, prepared_ahead, train_step
from sassl.views import VIEWS, TwoViews


class LightlyMoCoReference(torch.nn.Module):
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

    def forward(self, x1, x2, momentum=None, x1_target=None):
        """The trainer's call (train_step: x1, x2, momentum, x1_target) -> (loss, logs). The trainer moves only its
        own learners' targets (before the step), so this one moves its target here, by `momentum` or the paper's
        0.99. lightly's loss is a batch mean: logs["per_image"] repeats it (the trainer only collects it)."""
        from lightly.models.utils import update_momentum

        m = 0.99 if momentum is None else float(momentum)
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        q1, q2 = (self.prediction_head(self.projection_head(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.projection_head_momentum(self.backbone_momentum(x))
                      for x in (x1 if x1_target is None else x1_target, x2))
        loss = 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
        return loss, {"loss": loss.detach(), "per_image": loss.detach().expand(len(x1))}


def _timed(model, views: TwoViews, ahead: bool, crops: tuple, steps: int, dev: torch.device,
           dtype: torch.dtype | None = None, optimizer: str = "lars"):
    """A measurement: `steps` of the trainer's own steps on `crops` ((c1, c2) or, multi-crop, (c1, c2, local);
    prepared in order, or batch k+1 ahead; autocast to `dtype`, None: float32) with `optimizer`, returning
    images/s; the loss is read each step as the trainer does."""
    opt = make_optimizer(model, optimizer, 0.1, 1e-6)

    def prepare(batch, step):
        return prepare_batch(views, batch[0], batch[1], torch.Generator().manual_seed(step),
                             local=batch[2] if len(batch) > 2 else None)

    def run() -> float:
        t = time.perf_counter()
        for prepared in prepared_ahead([crops] * steps, prepare, 0, dev, ahead):
            loss, _ = train_step(model, views, opt, prepared, 0.1, 0.99, dtype)
            float(loss)  # the trainer reads each step's loss (its one host sync per step)
        return len(crops[0]) * steps / (time.perf_counter() - t)
    return run


def _learner(name: str, backbone: str, size: int, dev: torch.device):
    """The learner with its own heads (seeded), its view set and its config (at the bench's crop size: DINO's
    local crops at 3/7 of it)."""
    cfg = config_from_dict({"learner": name, "image_size": size})
    torch.manual_seed(0)
    model = create_learner(name, backbone, small_images=False, image_size=size, **learner_settings(cfg))
    return model.to(dev, memory_format=torch.channels_last), VIEWS[cfg.views], cfg


def _local_crops(batch: int, cfg) -> torch.Tensor:
    """Multi-crop's small crops as the loader ships them: (batch, local_crops, 3, s, s) uint8 of real photos."""
    s, n = local_size(cfg), cfg.local_crops
    x = (real_batch(batch * n, s) * 255).round().to(torch.uint8)
    return x.view(batch, n, 3, s, s)


def _overheads(r: dict[str, list[float]]) -> dict:
    """Medians of each mode's rate, and of each SASSL mode's per-round overhead over "off" with its IQR."""
    over = {k: [o / x - 1 for o, x in zip(r["off"], r[k])] for k in r if k != "off"}
    return ({f"{k}_img_s": float(np.median(v)) for k, v in r.items()}
            | {f"{k}_overhead_pct": 100 * float(np.median(v)) for k, v in over.items()}
            | {f"{k}_overhead_iqr_pct": [round(100 * float(np.percentile(v, q)), 1) for q in (25, 75)]
               for k, v in over.items()})


def _reference_row(crops: tuple, steps: int, repeats: int, size: int, backbone: str, dev: torch.device) -> dict:
    """Our MoCo v2 step against the same step built from lightly's blocks, SASSL off, in alternating rounds."""
    ours, view_cfg, cfg = _learner("mocov2", backbone, size, dev)
    bb, dim = create_backbone(backbone, small_images=False, image_size=size)
    torch.manual_seed(0)
    ref = LightlyMoCoReference(bb, dim, cfg.proj_hidden, cfg.proj_dim, cfg.temperature)
    ref = ref.to(dev, memory_format=torch.channels_last)
    r = interleaved({"ours": _timed(ours, TwoViews(view_cfg).to(dev), False, crops, steps, dev),
                     "lightly": _timed(ref, TwoViews(view_cfg).to(dev), False, crops, steps, dev)}, repeats)
    return {"learner": "mocov2 (lightly blocks)", "backbone": backbone, "batch": len(crops[0]), "size": size,
            "steps": steps, "repeats": repeats, "off_img_s": float(np.median(r["lightly"])),
            "ours_vs_lightly": float(np.median([a / b for a, b in zip(r["ours"], r["lightly"])]))}


def cfg_for(name: str, backbone: str, size: int, batch: int):
    """The config of a learner at the bench's sizes (for sassl.plan's FLOP count of its step)."""
    return config_from_dict({"learner": name, "backbone": backbone, "image_size": size, "batch_size": batch,
                             "small_images": False, "style": "none"})


def bench_train(batch: int = 64, size: int = 64, steps: int = 1, repeats: int = 15, device: str = "cpu",
                style: str = "pbn", learners=("mocov2", "simclr", "byol"), embed_sizes=(), reference: bool = True,
                backbone: str = "resnet18", bf16: bool = True) -> list[dict]:
    """Images/s of full training steps (uint8 crops -> the learner's own views -> learner with its own heads ->
    LARS, the loss read each step as the trainer does) per learner: SASSL off, on (p=0.8; styles and contents
    embedded at the crop size, the default) in order, on with batch k+1 prepared ahead (--sassl-async: a side
    stream on CUDA; in order on the CPU), and on with styles and contents embedded at each of `embed_sizes`
    (mode "sync_e<N>"). Modes alternate within each of `repeats` rounds of `steps` steps (short rounds, so the
    modes of a round see the same machine); medians of the rates and of the per-round overheads, with the
    overheads' interquartile range. `peak_mem_gb`: the process's peak resident memory after the learner's
    rounds (CPU) or the peak CUDA memory allocated (CUDA). With `bf16`, the same step under bf16 autocast (SASSL
    off and on) in the same rounds: `bf16_vs_fp32` is the median of the per-round ratio, and the step's GFLOP/s
    (sassl.plan's FLOP count of the learner's forward and backward) against the CPU's peak (cpu_peak_gflops)."""
    dev = torch.device(device)
    c1 = (real_batch(batch, size) * 255).round().to(torch.uint8)  # what the loader ships
    crops = (c1.to(dev), c1.flip(0).to(dev))
    st = pretrained(dev)
    ops = {"sync": make_style_op(style, st, p=0.8, embed_size=size, image_size=size, progress=False).op}
    ops |= {f"sync_e{e}": make_style_op(style, st, p=0.8, embed_size=e, image_size=e, progress=False).op for e in embed_sizes}
    rows = []
    for name in learners:
        model, view_cfg, cfg = _learner(name, backbone, size, dev)
        own = crops + ((_local_crops(batch, cfg).to(dev),) if cfg.local_crops else ())

        def timed(op=None, ahead=False, dtype=None):  # the learner's own step: its views, crops and optimiser
            return _timed(model, TwoViews(view_cfg, sassl=op).to(dev), ahead, own, steps, dev, dtype, cfg.optimizer)
        modes = {"off": timed()}
        for k, op in ops.items():
            modes[k] = timed(op)
            if k == "sync":
                modes["async"] = timed(op, ahead=True)
        if bf16:  # the same step under bf16 autocast (--precision bf16), SASSL off and on
            modes["bf16"], modes["sync_bf16"] = timed(dtype=torch.bfloat16), timed(ops["sync"], dtype=torch.bfloat16)
        r = interleaved(modes, repeats)
        row = {"learner": name, "backbone": backbone, "batch": batch, "size": size, "steps": steps,
               "local_crops": cfg.local_crops, "optimizer": cfg.optimizer, "repeats": repeats,
               "peak_mem_gb": peak_memory_gb(dev)} | _overheads(r)
        if bf16:
            median, iqr = paired_ratio(r["bf16"], r["off"])
            gflop = trace_step(cfg_for(name, backbone, size, batch), batch, batch, None,
                               with_sassl=False).learner_flops / 1e9
            row |= {"bf16_vs_fp32": median, "bf16_vs_fp32_iqr": iqr, "gflop_per_image": gflop, "fp32_gflops": gflop * row["off_img_s"],
                    "bf16_gflops": gflop * row["bf16_img_s"]}
            if dev.type == "cpu":
                row["fp32_peak_gflops"], row["fp32_peak_how"] = cpu_peak_gflops(torch.get_num_threads(), "fp32")
                row["bf16_peak_gflops"], row["bf16_peak_how"] = cpu_peak_gflops(torch.get_num_threads(), "bf16")
        rows.append(row)
    if not reference:
        return rows
    try:
        rows.append(_reference_row(crops, steps, repeats, size, backbone, dev))
    except ImportError:
        print("lightly is not installed (pip install lightly): no reference row")
    return rows


def format_train_table(rows: list[dict]) -> str:
    lines = ["| learner | backbone | batch | crop px | SASSL off (img/s) | SASSL p=0.8 (img/s) | ahead (img/s) | SASSL "
             "overhead (IQR) | ahead overhead (IQR) | peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda k, fmt: fmt.format(r[k]) if k in r else "-"  # noqa: E731
        iqr = lambda k: f" ({r[k][0]:+.0f}..{r[k][1]:+.0f})" if k in r else ""  # noqa: E731
        name = r["learner"] + (f" (+{r['local_crops']} local crops)" if r.get("local_crops") else "")
        lines.append(f"| {name} | {r['backbone']} | {r['batch']} | {r['size']} | {cell('off_img_s', '{:.2f}')} "
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
    for r in (r for r in rows if "bf16_vs_fp32" in r):
        lo, hi = r["bf16_vs_fp32_iqr"]
        lines.append(f"\n{r['learner']}: bf16/fp32 {r['bf16_vs_fp32']:.2f}x (IQR {lo:.2f}..{hi:.2f}; SASSL on: "
                     f"{r['sync_bf16_img_s'] / r['sync_img_s']:.2f}x of medians), {r['gflop_per_image']:.2f} GFLOP per "
                     f"image: fp32 {r['fp32_gflops']:.0f} GFLOP/s, bf16 {r['bf16_gflops']:.0f} GFLOP/s"
                     + (f"; peak fp32 {r['fp32_peak_gflops']:.0f} ({r['fp32_peak_how']}) -> "
                        f"{100 * r['fp32_gflops'] / r['fp32_peak_gflops']:.0f}%, bf16 {r['bf16_peak_gflops']:.0f} -> "
                        f"{100 * r['bf16_gflops'] / r['bf16_peak_gflops']:.0f}%" if r.get("fp32_peak_gflops") else ""))
    ref = [r for r in rows if "ours_vs_lightly" in r]
    if ref:
        lines.append(f"\nours / lightly-based MoCo v2 step (SASSL off): {ref[0]['ours_vs_lightly']:.2f}x")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """The `train` subcommand and its flags."""
    p = sub.add_parser("train", help="training-step throughput per learner, SASSL off/on, lightly reference")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1, help="steps per timed measurement")
    p.add_argument("--repeats", type=int, default=15, help="rounds of off / sync / ahead measurements")
    p.add_argument("--learners", nargs="+", default=["mocov2", "simclr", "byol"],
                   help="any of sassl.learners.LEARNERS, each with its own views, heads, optimiser and crops (dino: "
                        "2 global + 8 local)")
    p.add_argument("--backbone", default="resnet18", help=f"{', '.join(BACKBONES)}, or timm:NAME")
    p.add_argument("--embed-sizes", type=int, nargs="*", default=[],
                   help="also time SASSL with styles and contents embedded at these sides (px), e.g. 256")
    p.add_argument("--no-reference", action="store_true", help="leave out the lightly-based MoCo v2 reference row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bf16", action="store_true", help="leave out the bf16 autocast rounds")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench train ...`: run it and print (or write) the result."""
    rows = bench_train(args.batch, args.size, args.steps, args.repeats, args.device, learners=args.learners,
                       embed_sizes=args.embed_sizes, reference=not args.no_reference, backbone=args.backbone,
                       bf16=not args.no_bf16)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(format_train_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0
