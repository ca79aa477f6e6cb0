"""Self-supervised pre-training with or without SASSL: `sassl pretrain` / `pretrain(config)`.

Single process needs no launcher; `torchrun --nproc_per_node N -m sassl.cli pretrain ...` runs data
parallel (NCCL on GPUs, gloo on CPU). Every run writes runs/<name>/: config.json (resolved config,
git commit, style source used), metrics.jsonl, checkpoints/last.pt (atomic; each epoch and every
`checkpoint_every` steps) and figures/curves.html (+ .png when kaleido is installed). `resume=True`
continues from the last checkpoint and reproduces the uninterrupted run: data order, crops and
augmentations are drawn from seeds derived from (seed, epoch, step), not from global RNG state.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sassl import dist
from sassl.config import check_range, from_dict, plain
from sassl.data import get_dataset, held_out_split, parse_name, resize_all
from sassl.eval.knn import extract_features, knn_accuracy
from sassl.learners import LEARNERS, cosine_momentum, create_learner
from sassl.optim import LARS, cosine_lr, param_groups
from sassl.plots import training_curves
from sassl.runtime import duration, git_commit, read_metrics, resolve_device, terminal_line
from sassl.stylizer import StyleChoice, make_style_op
from sassl.views import TwoCrops, TwoViews


@dataclass
class PretrainConfig:
    """Flat, typed run settings. The trailing comment of each field is its `sassl pretrain --help` line
    (sassl.config.field_help); the pretrain notebook's parameters cell uses the same names."""

    name: str = "pretrain"                # run folder: <runs_dir>/<name>
    learner: str = "mocov2"               # mocov2 (the SASSL paper's, no queue), mocov2-queue (classic), simclr, byol
    backbone: str = "resnet18"            # resnet18, resnet34 or resnet50 (torchvision layout, random init)
    small_images: bool = False            # CIFAR stem (3x3 conv, no max pool); false: ImageNet stem (cheaper on CPU)
    dataset: str = "objects"              # registry name or imagefolder:PATH; 'train' trains, test (else val, or NAME@SPLIT) feeds the kNN monitor
    image_size: int = 64                  # side of the random resized crops, px
    crop_scale: tuple = (0.08, 1.0)       # random resized crop area range, as a share of the image (BYOL: 0.08-1)
    style: str = "pbn"                    # SASSL style source: none (off), batch, noise, content, a dataset name, a folder or a bank .pt
    p: float = 0.8                        # SASSL probability per image
    alpha: tuple = (0.1, 0.3)             # embedding blend range: z is alpha P(style) + (1 - alpha) P(content)
    beta: tuple = (0.1, 0.3)              # pixel blend range: y is beta T(content, z) + (1 - beta) content
    layers: int = 13                      # stylize only the first k of the 13 CIN layers (the rest get the content's code)
    # NOTE: a CPU-scale budget (9 epochs of batch 32 = 657 steps; lr 2.0 per 256 is 0.25 per step), sized
    # so the main job fits 20 minutes on a 2-core AVX2 CPU; the paper pre-trains on ImageNet for hundreds
    # of epochs (docs/DESIGN.md §2.3; the measurements behind this choice are in docs/RESULTS.md)
    epochs: int = 9                       # passes over the train split
    batch_size: int = 32                  # global batch, split over processes
    optimizer: str = "lars"               # lars or sgd (momentum 0.9)
    lr: float = 2.0                       # base learning rate per 256 images (scaled by batch_size / 256)
    weight_decay: float = 1e-6            # L2 on weights; biases and norm layers exempt
    warmup_epochs: float = 1.0            # linear learning-rate warm-up, then cosine decay to 0
    ema: float = 0.99                     # base target momentum (mocov2, byol), cosine schedule up to 1.0
    temperature: float = 0.0              # contrastive temperature; 0: the learner's default
    proj_hidden: int = 1024               # hidden width of the projector (and predictor) MLPs
    proj_dim: int = 128                   # output width of the projector
    seed: int = 0                         # seeds init, data order, crops and augmentations
    device: str = "auto"                  # auto (cuda if available), cpu, cuda or cuda:N
    amp: bool = True                      # bfloat16 autocast on CUDA (ignored on CPU)
    sync_bn: bool = False                 # SyncBatchNorm across processes (CUDA only in PyTorch)
    num_workers: int = 2                  # DataLoader worker processes per process (decoding and crops)
    checkpoint_every: int = 0             # also checkpoint every N steps (0: at the end of each epoch only)
    knn_k: int = 20                       # neighbours of the kNN monitor
    knn_every: int = 3                    # epochs between kNN monitor passes (the last epoch always has one)
    max_steps: int = 0                    # stop after N steps in total (0: no limit; smoke tests)
    runs_dir: str = "runs"                # the runs root that holds <name>/ (one name for it in every config)

    # fields that may differ between a run and its resumption
    RESUME_FREE = ("epochs", "num_workers", "device", "runs_dir", "checkpoint_every", "knn_every", "max_steps")


def config_from_dict(values: dict) -> PretrainConfig:
    """Validated config: unknown keys and wrong types raise ValueError naming the parameter."""
    cfg = from_dict(PretrainConfig, values)
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    """Clear errors for impossible settings, before any data is loaded."""
    if cfg.learner not in LEARNERS:
        raise ValueError(f"learner: unknown {cfg.learner!r}; available: {', '.join(LEARNERS)}")
    if cfg.optimizer not in ("lars", "sgd"):
        raise ValueError(f"optimizer: expected lars or sgd, got {cfg.optimizer!r}")
    for name, lo in (("epochs", 1), ("batch_size", 2), ("image_size", 16), ("knn_k", 1), ("knn_every", 1)):
        if getattr(cfg, name) < lo:
            raise ValueError(f"{name}: must be >= {lo}, got {getattr(cfg, name)}")
    if cfg.batch_size % dist.world_size():
        raise ValueError(f"batch_size: {cfg.batch_size} does not split over {dist.world_size()} processes")
    if not 0 <= cfg.p <= 1:
        raise ValueError(f"p: must lie in [0, 1], got {cfg.p}")
    for name in ("alpha", "beta", "crop_scale"):
        check_range(name, getattr(cfg, name), positive=name == "crop_scale")
    if not 0 <= cfg.layers <= 13:
        raise ValueError(f"layers: must be in [0, 13], got {cfg.layers}")


# ----------------------------------------------------------------------------- data

class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices for one epoch: a seeded permutation cut to whole global batches, the first
    `skip_batches` left out (mid-epoch resume); rank r takes every world-th index."""

    def __init__(self, n: int, global_batch: int, seed: int):
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.epoch, self.skip_batches = 0, 0

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        perm = perm[self.skip_batches * self.global_batch:self.batches_per_epoch() * self.global_batch]
        return iter(perm[dist.rank()::dist.world_size()].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.skip_batches) * self.global_batch // dist.world_size()


def style_op(cfg: PretrainConfig, device: torch.device, progress: bool = True) -> StyleChoice:
    """The SASSL op a config asks for (op None when style is 'none') and where its styles came from."""
    return make_style_op(cfg.style, p=cfg.p, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers,
                         progress=progress, device=device)


# ----------------------------------------------------------------------------- checkpoints

def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


RENAMED = {"out_dir": "runs_dir"}  # config keys of older runs -> today's names (read when resuming them)


def _comparable(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in PretrainConfig.RESUME_FREE}


# ----------------------------------------------------------------------------- the loop

def train_step(model: nn.Module, views: nn.Module, opt: torch.optim.Optimizer, c1: torch.Tensor, c2: torch.Tensor,
               g: torch.Generator, lr: float, momentum: float, amp: bool = False) -> tuple[torch.Tensor, dict]:
    """One optimisation step on a batch of crop pairs: views (SASSL included) -> learner -> backward -> step."""
    x1, x2, _ = views(c1, c2, g)
    # channels-last activations: oneDNN's convolutions (CPU) and cuDNN's tensor cores (CUDA) are faster on
    # them; the maths is unchanged
    x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
    for grp in opt.param_groups:
        grp["lr"] = lr
    with torch.autocast(c1.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, logs = model(x1, x2, momentum)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logs


def learner_settings(cfg: PretrainConfig) -> dict:
    """The settings a config gives a learner; create_learner keeps those the learner's class declares."""
    return {"proj_hidden": cfg.proj_hidden, "proj_dim": cfg.proj_dim, "pred_hidden": cfg.proj_hidden,
            "temperature": cfg.temperature or None}  # 0: the learner's own default


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """LARS (biases and norm layers exempt from decay and adaptation) or SGD with momentum 0.9."""
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns the final metrics. Raises before training for a bad config or checkpoint."""
    validate(cfg)
    run_dir = Path(cfg.runs_dir) / cfg.name
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    cfg_dict = plain(asdict(cfg))
    state = None
    if ckpt_path.is_file():
        if not resume:
            raise FileExistsError(f"{run_dir} already has a checkpoint; pass resume=True (--resume) to continue it, "
                                  "or choose another run name")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = {RENAMED.get(k, k): v for k, v in json.loads(state["config"]).items()}
        if _comparable(saved) != _comparable(cfg_dict):
            diff = {k: (saved.get(k), v) for k, v in _comparable(cfg_dict).items() if saved.get(k) != v}
            raise ValueError(f"{ckpt_path} was written by a different config (checkpoint vs now): {diff}")
    elif resume and dist.rank() == 0:
        print(f"sassl pretrain: no checkpoint at {ckpt_path} yet; starting the run", flush=True)

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    base_name, _ = parse_name(cfg.dataset)  # NAME@SPLIT names the monitor's split
    train_ds = get_dataset(base_name, split="train")
    global_batch = cfg.batch_size
    if len(train_ds) < global_batch:
        raise ValueError(f"batch_size: {global_batch} is larger than {cfg.dataset}'s train split ({len(train_ds)} images)")
    monitor_split = held_out_split(cfg.dataset)  # the kNN monitor's test split; None for a single pool
    test_ds = get_dataset(base_name, split=monitor_split) if monitor_split else None
    run_meta = {"git_commit": git_commit(), "world_size": dist.world_size(), "device": str(device),
                "train_images": len(train_ds), "dataset_source_used": train_ds.meta.get("source_used")}
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, **learner_settings(cfg)).to(device, memory_format=torch.channels_last)
    if dist.is_dist() and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    style = style_op(cfg, device, progress=dist.rank() == 0)
    run_meta["style_source_used"] = style.used
    if style.bank is not None:
        run_meta["style_bank_size"] = len(style.bank)
    views = TwoViews(sassl=style.op).to(device)

    base_lr = cfg.lr * global_batch / 256
    opt = make_optimizer(model, cfg.optimizer, base_lr, cfg.weight_decay)
    sampler = EpochSampler(len(train_ds), global_batch, cfg.seed)
    steps_per_epoch = sampler.batches_per_epoch()
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    planned = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps  # steps this invocation ends at
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.is_dist() else model

    crops = TwoCrops(train_ds, cfg.image_size, cfg.seed, scale=cfg.crop_scale)
    if dist.rank() == 0:
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg_dict | {"resolved": run_meta}, indent=1))
    metrics_file = run_dir / "metrics.jsonl"
    if dist.rank() == 0 and metrics_file.exists():
        # keep what the checkpoint we resume from had seen; rows logged after it (or a partial
        # epoch's summary, or everything when starting afresh) are written again
        def keep(row: dict) -> bool:
            partial_epoch = "epoch_seconds" in row and row["step"] == step and step % steps_per_epoch
            return state is not None and row["step"] <= step and not partial_epoch

        rows = read_metrics(metrics_file)
        metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))
    knn_data = None
    if test_ds is not None:
        knn_data = (resize_all(train_ds, cfg.image_size), resize_all(test_ds, cfg.image_size))

    def log(row: dict) -> None:
        if dist.rank() == 0:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save() -> None:
        if dist.rank() == 0:
            _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                          "config": json.dumps(cfg_dict)}, ckpt_path)

    def knn_now() -> float:
        (tr_x, tr_y), (te_x, te_y) = knn_data
        bb = model.backbone
        acc = knn_accuracy(extract_features(bb, tr_x), tr_y, extract_features(bb, te_x), te_y,
                           len(train_ds.classes), k=cfg.knn_k)
        return round(100 * acc, 2)

    if state is None and knn_data is not None and dist.rank() == 0:
        log({"epoch": 0, "step": 0, "knn_top1": knn_now()})  # the random-init baseline a run must beat
        if progress:
            terminal_line(f"{cfg.name}: random-init kNN {read_metrics(metrics_file)[-1]['knn_top1']:.2f}% "
                          f"(the bar to beat); {planned} steps to go, run folder {run_dir}")

    use_amp = cfg.amp and device.type == "cuda"
    start_epoch = step // steps_per_epoch
    result = {}
    if start_epoch >= cfg.epochs and metrics_file.exists():  # resuming a finished run: report it again
        epoch_rows = [r for r in read_metrics(metrics_file) if "epoch_seconds" in r]
        result = epoch_rows[-1] if epoch_rows else {}
    epoch_times: list[float] = []  # wall time of each epoch (with its monitor), for the time-left estimate
    for epoch in range(start_epoch, cfg.epochs):
        sampler.epoch, sampler.skip_batches = epoch, step - epoch * steps_per_epoch
        crops.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(crops, batch_size=global_batch // dist.world_size(), sampler=sampler,
                                             num_workers=cfg.num_workers, drop_last=True,
                                             pin_memory=device.type == "cuda", persistent_workers=False)
        model.train()
        t0, seen, losses = time.time(), 0, []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or dist.rank() != 0,
                   initial=sampler.skip_batches, total=steps_per_epoch)
        for c1, c2, _ in bar:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * dist.world_size() + dist.rank())
            lr = cosine_lr(step, total_steps, warmup, base_lr)
            m = cosine_momentum(step, total_steps, cfg.ema)
            loss, logs = train_step(ddp, views, opt, c1.to(device, non_blocking=True), c2.to(device, non_blocking=True),
                                    g, lr, m, use_amp)
            step += 1
            seen += len(c1) * dist.world_size()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower lr (now {cfg.lr})")
            loss_value = float(logs["loss"])  # the step's one read of the loss on the host
            losses.append(loss_value)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")
            log({"step": step, "epoch": epoch + 1, "loss": loss_value, "lr": lr, "momentum": m})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save()
            if cfg.max_steps and step >= cfg.max_steps:
                break
        row = {"epoch": epoch + 1, "step": step, "epoch_seconds": round(time.time() - t0, 2),
               "images_per_second": round(seen / max(1e-9, time.time() - t0), 1)}
        last = epoch + 1 == cfg.epochs or (cfg.max_steps and step >= cfg.max_steps)
        if knn_data is not None and ((epoch + 1) % cfg.knn_every == 0 or last) and dist.rank() == 0:
            row["knn_top1"] = knn_now()
        log(row)
        result = row
        save()
        if progress and dist.rank() == 0:
            epoch_times.append(time.time() - t0)
            left = (planned - step) / steps_per_epoch * sum(epoch_times) / len(epoch_times)
            knn = f"  kNN {row['knn_top1']:.2f}%" if "knn_top1" in row else ""
            loss_txt = f"  loss {sum(losses) / len(losses):.3f}" if losses else ""
            terminal_line(f"{cfg.name}: epoch {epoch + 1}/{cfg.epochs}  step {step}/{planned}{loss_txt}{knn}  "
                          f"{row['images_per_second']:.0f} img/s  epoch {duration(epoch_times[-1])}  "
                          f"left ~{duration(left)}")
        if cfg.max_steps and step >= cfg.max_steps:
            break
    if dist.rank() == 0:
        training_curves(metrics_file, run_dir / "figures" / "curves")
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
