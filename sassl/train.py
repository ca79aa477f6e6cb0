"""Self-supervised pre-training with or without SASSL: `sassl pretrain` / `pretrain(config)`.

Single process needs no launcher; `torchrun --nproc_per_node N -m sassl.cli pretrain ...` runs data
parallel (NCCL on GPUs, gloo on CPU). Every run writes runs/<name>/: config.json (resolved config,
git commit, style source used), metrics.jsonl, checkpoints/last.pt (atomic; each epoch and every
`checkpoint_every` steps) and figures/curves.html (+ .png when kaleido is installed). `resume=True`
continues from the last checkpoint and reproduces the uninterrupted run: data order, crops and
augmentations are drawn from seeds derived from (seed, epoch, step), not from global RNG state.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from sassl import dist
from sassl.backbones import check_backbone
from sassl.config import check_range, from_dict, plain
from sassl.data import get_dataset, held_out_split, parse_name
from sassl.eval.knn import KnnMonitor
from sassl.learners import LEARNERS, MomentumTwoTower, cosine_momentum, create_learner
from sassl.optim import OPTIMIZERS, cosine_lr, make_optimizer
from sassl.paths import atomic_file
from sassl.plots import training_curves
from sassl.recipes import recipe_values, with_recipe
from sassl.devices import resolve_device
from sassl.records import duration, git_commit, read_metrics, terminal_line
from sassl.stylizer import DEFAULTS as SASSL_DEFAULTS, StyleChoice, check_settings, make_style_op
from sassl.tracking import RunLog
from sassl.data.loader import (DeviceDecoder, DevicePrefetcher, EpochSampler, TwoCrops, check_shared_memory,
                               loader_workers, make_loader, to_unit)
from sassl.views import TOWERS, VIEWS, Prepared, TwoViews


_OWN = LEARNERS["mocov2"].run  # the default learner's settings (PretrainConfig.learner)


@dataclass
class PretrainConfig:
    """Flat, typed run settings. The trailing comment of each field is its `sassl pretrain --help` line
    (sassl.config.field_help); the pretrain notebook's parameters cell uses the same names."""

    name: str = "pretrain"                # run folder: <runs_dir>/<name>
    recipe: str = ""                      # named settings under the ones given (which win): imagenet-resnet50, imagenet-resnet50x4, imagenet-vit-b-mocov3 (sassl.recipes)
    learner: str = "mocov2"               # mocov2 (the SASSL paper's, no queue), mocov2-queue (classic), simclr, byol, mocov3; its own views, heads, momentum and temperature come with it (sassl.learners.LEARNERS)
    backbone: str = "resnet18"            # resnet18, resnet34, resnet50, resnet50x4 (every width x4), vit_tiny, vit_s_16, vit_b_16 (random init)
    small_images: bool = False            # CIFAR stem (3x3 conv, no max pool); false: ImageNet stem (cheaper on CPU)
    dataset: str = "objects"              # registry name or imagefolder:PATH; 'train' trains, test (else val, or NAME@SPLIT) feeds the kNN monitor
    image_size: int = 64                  # side of the random resized crops, px
    crop_scale: tuple = (0.08, 1.0)       # random resized crop area range, as a share of the image (BYOL: 0.08-1)
    style: str = "pbn"                    # SASSL style source: none (off), batch, noise, content, a dataset name, a folder or a bank .pt
    p: float = SASSL_DEFAULTS["p"]        # SASSL probability per image
    alpha: tuple = SASSL_DEFAULTS["alpha"]  # embedding blend range: z is alpha P(style) + (1 - alpha) P(content)
    beta: tuple = SASSL_DEFAULTS["beta"]  # pixel blend range: y is beta T(content, z) + (1 - beta) content
    layers: int = SASSL_DEFAULTS["layers"]  # stylize only the first k of the 13 CIN layers (the rest get the content's code)
    views: str = _OWN["views"]        # view augmentations: byol, simclr, mocov2 (classic), mocov3 (sassl.views.VIEWS); default: the learner's own
    # NOTE: the paper embeds styles at 256 px (Magenta's size) and does not say at what size the content is
    # embedded. The same painting embedded at 64 and at 256 px lies farther apart (mean distance 5.06) than two
    # paintings at 256 (3.28) (docs/RESULTS.md), so bank, in-batch and content codes are all embedded at one
    # size. 0 follows the crop size: free at 64 px on a CPU, where 256 px costs about 60% more per step.
    embed_size: int = 0                   # side (px) at which the style predictor embeds bank styles, in-batch styles and the content; 0: image_size (the imagenet recipes use 256, the paper's)
    sassl_towers: str = "both"            # which towers see view 1 stylized: both (the default reading, sassl.views.TOWERS) or online (the target tower gets view 1 unstylized); momentum learners only
    # NOTE: a CPU-scale budget (9 epochs of batch 32 = 657 steps; lr 2.0 per 256 is 0.25 per step), sized
    # for a 2-core CPU, where the main job's 18-minute time budget keeps the epochs that fit (all 9 on a
    # 2-core AVX2 CPU, fewer on a slower one) so that it ends within 20 minutes; the paper pre-trains on
    # ImageNet for hundreds of epochs
    # (docs/DESIGN.md §2.3; the measurements behind this choice: docs/RESULTS.md, "Main-job budget")
    epochs: int = 9                       # passes over the train split
    # NOTE: not in the paper. A main job that must fit any 2-core machine gets a wall-clock budget: after
    # each epoch the run keeps as many of `epochs` as still fit at its pace so far (the schedules end with them)
    time_budget: float = 0.0              # minutes the run may take (0: no limit); after each epoch it keeps only the epochs that still fit at the pace so far (make demo: 18)
    batch_size: int = 32                  # global batch, split over processes
    optimizer: str = "lars"               # lars, sgd (momentum 0.9) or adamw (mocov3's)
    lr: float = 2.0                       # base learning rate per 256 images (scaled by batch_size / 256)
    weight_decay: float = 1e-6            # L2 on weights; biases and norm layers exempt
    warmup_epochs: float = 1.0            # linear learning-rate warm-up, then cosine decay to 0
    ema: float = _OWN["ema"]          # base target momentum (momentum learners), cosine schedule up to 1.0; default: the learner's own
    temperature: float = _OWN["temperature"] # contrastive temperature (mocov2, simclr, mocov3); default: the learner's own
    proj_hidden: int = _OWN["proj_hidden"] # hidden width of the projector (and predictor) MLPs; default: the learner's own
    proj_dim: int = _OWN["proj_dim"]  # output width of the projector; default: the learner's own
    seed: int = 0                         # seeds init, data order, crops and augmentations
    device: str = "auto"                  # auto (cuda if available), cpu, cuda or cuda:N
    amp: bool = True                      # mixed precision on CUDA: bfloat16, or float16 + GradScaler where the GPU has no bfloat16 (ignored on CPU)
    sync_bn: bool = False                 # SyncBatchNorm across processes (CUDA only in PyTorch)
    num_workers: int = -1                 # DataLoader workers per process (decoding, crops); -1: this node's cores per process, less one, at most 16
    decode: str = "fast"                  # where JPEGs are decoded: fast (loader workers, only as far as the crops need) or device (nvJPEG on the GPU, for hosts whose CPUs cannot keep up)
    sassl_async: bool = False             # stylize batch k+1 on a side CUDA stream while step k trains (on CPU the same code runs in order, same result)
    compile: bool = False                 # torch.compile the learner's step (minutes of compiling first; worth it for long GPU runs)
    checkpoint_every: int = 0             # also checkpoint every N steps (0: at the end of each epoch only)
    knn_k: int = 20                       # neighbours of the kNN monitor
    knn_every: int = 3                    # epochs between kNN monitor passes (the last epoch always has one); 0: no monitor
    knn_max_train: int = 20000            # kNN monitor: at most this many train images (a seeded subset; 0: all)
    knn_max_test: int = 5000              # kNN monitor: at most this many held-out images (a seeded subset; 0: all)
    accumulate: int = 1                   # micro-batches per step (gradient accumulation; the step sees batch_size images)
    dist_timeout: float = 60.0            # minutes a process waits for the others in a collective before the run stops
    max_steps: int = 0                    # stop after N steps in total (0: no limit; smoke tests)
    runs_dir: str = "runs"                # the runs root that holds <name>/ (one name for it in every config)
    tensorboard: bool = True              # TensorBoard event files in <run>/tensorboard/ (scalars, SASSL draws, views): tensorboard --logdir runs
    # NOTE: reading each step's per-image losses to the host makes the step wait for the device (a sync per step)
    log_augment: bool = False             # per image and step: SASSL's draws (stylized, alpha, beta, style row) and the image's loss (its two directions averaged) in <run>/augment.bin (rank 0's images; sassl.tracking.read_augment)
    wandb: str = ""                       # a Weights & Biases project to log to as well (needs the wandb extra: pip install sassl[wandb]; without a network set WANDB_MODE to offline)

    # fields that may differ between a run and its resumption
    RESUME_FREE = ("epochs", "time_budget", "num_workers", "device", "runs_dir", "checkpoint_every", "knn_every",
                   "knn_max_train", "knn_max_test", "max_steps", "accumulate", "dist_timeout", "sassl_async", "compile",
                   "decode", "tensorboard", "wandb", "log_augment")


def config_from_dict(values: dict) -> PretrainConfig:
    """The validated config that `values` (the settings given: flags, notebook parameters, JSON) describe,
    on top of their recipe's settings and their learner's own (sassl.recipes): given values win. Unknown
    keys and wrong types raise ValueError naming the parameter. The one place these layers are applied."""
    cfg = from_dict(PretrainConfig, with_recipe(values, PretrainConfig.learner))
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    """Clear errors for impossible settings, before any data is loaded."""
    if cfg.learner not in LEARNERS:
        raise ValueError(f"learner: unknown {cfg.learner!r}; available: {', '.join(LEARNERS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.views not in VIEWS:
        raise ValueError(f"views: expected one of {', '.join(VIEWS)}, got {cfg.views!r}")
    check_backbone(cfg.backbone, cfg.small_images, cfg.image_size)
    for name, lo in (("epochs", 1), ("batch_size", 2), ("image_size", 16), ("embed_size", 0), ("knn_k", 1), ("knn_every", 0),
                     ("knn_max_train", 0), ("knn_max_test", 0), ("accumulate", 1), ("num_workers", -1)):
        if getattr(cfg, name) < lo:
            raise ValueError(f"{name}: must be >= {lo}, got {getattr(cfg, name)}")
    if cfg.batch_size % (dist.world_size() * cfg.accumulate):
        raise ValueError(f"batch_size: {cfg.batch_size} does not split into {dist.world_size()} processes x "
                         f"{cfg.accumulate} micro-batches (accumulate)")
    if cfg.time_budget < 0:
        raise ValueError(f"time_budget: must be >= 0 minutes (0: no limit), got {cfg.time_budget}")
    if cfg.dist_timeout <= 0:
        raise ValueError(f"dist_timeout: must be > 0 minutes, got {cfg.dist_timeout}")
    check_settings(cfg.p, cfg.alpha, cfg.beta, cfg.layers)  # SASSL's own check, before any data is loaded
    check_range("crop_scale", cfg.crop_scale, positive=True)
    if 0 < cfg.embed_size < 32:
        raise ValueError(f"embed_size: must be 0 (the crop size) or >= 32 px, got {cfg.embed_size}")
    if cfg.sassl_towers not in TOWERS:
        raise ValueError(f"sassl_towers: expected one of {', '.join(TOWERS)}, got {cfg.sassl_towers!r}")
    if cfg.sassl_towers != "both" and not issubclass(LEARNERS[cfg.learner].cls, MomentumTwoTower):
        raise ValueError(f"sassl_towers: {cfg.learner} has one tower (no target network); only 'both' applies")
    if cfg.decode not in TwoCrops.DECODE:
        raise ValueError(f"decode: expected one of {', '.join(TwoCrops.DECODE)}, got {cfg.decode!r}")
    recipe_values(cfg.recipe)  # an unknown recipe raises, listing the known ones
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError(f"wandb: project {cfg.wandb!r} given but wandb is not installed; "
                         "pip install 'sassl[wandb]' (or leave wandb empty)")
    if cfg.compile and cfg.sync_bn:
        warnings.warn("compile with sync_bn: SyncBatchNorm breaks torch.compile's graph at every norm layer and "
                      "this pair has not been measured on a GPU; expect little gain from compile", stacklevel=2)


# ----------------------------------------------------------------------------- data

def style_op(cfg: PretrainConfig, device: torch.device, progress: bool = True) -> StyleChoice:
    """The SASSL op a config asks for (op None when style is 'none') and where its styles came from."""
    size = cfg.embed_size or cfg.image_size  # one size for the bank's styles and the content (embed_size)
    return make_style_op(cfg.style, p=cfg.p, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers, embed_size=size,
                         image_size=size, progress=progress, device=device)


# ----------------------------------------------------------------------------- checkpoints

RENAMED = {"out_dir": "runs_dir"}  # config keys of older runs -> their current names (read when resuming them)


def _comparable(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in PretrainConfig.RESUME_FREE}


# ----------------------------------------------------------------------------- the loop

def step_generator(cfg: PretrainConfig, step: int) -> torch.Generator:
    """The CPU generator of a step's draws (SASSL, views) on this rank: seeded by (seed, step, rank)."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * dist.world_size() + dist.rank())


def prepare_batch(views: TwoViews, c1: torch.Tensor, c2: torch.Tensor, g: torch.Generator,
                  accumulate: int = 1) -> list[Prepared]:
    """A batch of crop pairs (uint8 or [0, 1]) cut into `accumulate` micro-batches, each with its draws made
    and SASSL applied (TwoViews.prepare), in the order a step consumes them."""
    if c1.dtype == torch.uint8:
        c1, c2 = to_unit(c1), to_unit(c2)
    return [views.prepare(m1, m2, g) for m1, m2 in zip(c1.chunk(accumulate), c2.chunk(accumulate))]


def prepared_ahead(batches: Iterable, prepare: Callable[[list, int], list[Prepared]],
                   first_step: int, device: torch.device, ahead: bool) -> Iterator[list[Prepared]]:
    """The prepared batches of a loader, step by step. With `ahead`, batch k+1 is prepared (SASSL included)
    before batch k is handed out: on CUDA on a side stream, so stylizing overlaps step k's kernels; on the
    CPU in order, with the same draws, so the result equals preparing each batch when its step comes."""
    main = torch.cuda.current_stream(device) if ahead and device.type == "cuda" else None
    side = torch.cuda.Stream(device) if main is not None else None

    def launch(batch, step):
        if side is None:
            return prepare(batch, step), None
        side.wait_stream(main)  # the batch's copy to the device is ordered on the main stream
        with torch.cuda.stream(side):
            prep = prepare(batch, step)
            done = torch.cuda.Event()
            done.record(side)
        return prep, done

    def handed_out(prep, done):
        if done is not None:
            main.wait_event(done)  # this batch's work only, not the next batch's queued after it
            for p in prep:
                for t in (p.crop1, p.crop2, p.clean1):
                    if t is not None:
                        t.record_stream(main)
        return prep

    it, step = iter(batches), first_step
    if not ahead:
        for batch in it:
            yield prepare(batch, step)
            step += 1
        return
    first = next(it, None)
    if first is None:
        return
    pending = launch(first, step)
    for batch in it:
        step += 1
        queued = launch(batch, step)
        yield handed_out(*pending)
        pending = queued
    yield handed_out(*pending)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype: bfloat16 on CUDA GPUs of compute capability 8.0 and up (Ampere: bf16 tensor cores),
    float16 (with a GradScaler) below it; None on CPU or off. NOTE: torch.cuda.is_bf16_supported() also
    counts emulated bf16 (V100, T4), which runs far slower than their float16 tensor cores."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def ddp_of(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DDP wrapper of a step model, also under torch.compile (whose wrapper is not a DDP instance)."""
    model = getattr(model, "_orig_mod", model)
    return model if isinstance(model, nn.parallel.DistributedDataParallel) else None


def unwrap(model: nn.Module) -> nn.Module:
    """The learner inside torch.compile's and DDP's wrappers."""
    ddp = ddp_of(model)
    return ddp.module if ddp is not None else getattr(model, "_orig_mod", model)


def train_step(model: nn.Module, views: TwoViews, opt: torch.optim.Optimizer, batch: list[Prepared], lr: float,
               momentum: float, dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None
               ) -> tuple[torch.Tensor, dict]:
    """One optimisation step on a prepared batch (prepare_batch): the view ops -> learner -> backward -> step.

    A batch of k > 1 micro-batches (gradient accumulation) runs each through views, forward and backward
    (gradients summed, DDP's all-reduce only on the last), then one optimiser step. The target tower moves
    once, before the first micro-batch, outside the wrapped forward. Learners without negatives (BYOL) get exactly the full batch's
    gradient (BN aside: it normalises per micro-batch). NOTE: contrastive learners (MoCo v2, SimCLR) then
    contrast each micro-batch against its own negatives only, as each GPU does without gathering: a smaller
    effective batch for the loss than `batch_size`. `dtype`: autocast dtype (None: fp32); `scaler`: a
    GradScaler for float16. Returns the mean loss (a 0-d tensor, not read on the host) and the last micro-batch's
    logs, with "per_image" holding every micro-batch's per-image losses in order."""
    for grp in opt.param_groups:
        grp["lr"] = lr
    opt.zero_grad(set_to_none=True)
    device = batch[0].crop1.device
    total = torch.zeros((), device=device)
    logs: dict = {}
    per_image = []
    learner, ddp = unwrap(model), ddp_of(model)
    if isinstance(learner, MomentumTwoTower):
        # the target moves once per step, before the first micro-batch and outside DDP's (and compile's)
        # forward: a Python float, so nothing is moved to the GPU and read back (no host sync)
        learner.update_target(float(momentum))
    for k, prep in enumerate(batch):
        x1, x2, _ = views.finish(prep)
        x1t = views.target_view(prep)  # view 1 without SASSL for the target tower (sassl_towers=online), else None
        # channels-last activations: oneDNN's convolutions (CPU) and cuDNN's tensor cores (CUDA) are faster on
        # them; the maths is unchanged
        x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        if x1t is not None:
            x1t = x1t.contiguous(memory_format=torch.channels_last)
        last = k == len(batch) - 1
        # DDP's all-reduce on the last micro-batch only; ddp_of also finds DDP under torch.compile's wrapper
        sync = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss, logs = model(x1, x2, None, x1t)
            scaled = loss / len(batch)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach() / len(batch)
        per_image.append(logs["per_image"])
    logs["per_image"] = torch.cat(per_image)
    if scaler is not None:
        scaler.step(opt)  # skips the step when float16 gradients overflowed, then adapts the scale
        scaler.update()
    else:
        opt.step()
    return total, logs


def learner_settings(cfg: PretrainConfig) -> dict:
    """The settings a config gives a learner; create_learner keeps those the learner's class declares."""
    return {"proj_hidden": cfg.proj_hidden, "proj_dim": cfg.proj_dim, "pred_hidden": cfg.proj_hidden,
            "temperature": cfg.temperature or None}  # 0: the learner's own


# ----------------------------------------------------------------------------- the run, in named parts

@dataclass
class Run:
    """Where a run lives and what it resumes from (the same on every rank)."""

    dir: Path
    cfg_dict: dict
    state: dict | None  # the checkpoint resumed from, or None for a fresh start
    step: int           # the global step the run continues after

    @property
    def ckpt_path(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    @property
    def metrics_file(self) -> Path:
        return self.dir / "metrics.jsonl"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold run_dir/.lock while a run trains (rank 0 takes it; every rank stops when it cannot): a second
    process training the same run, a second `--resume` from another shell, say, would interleave its rows with
    this one's in metrics.jsonl and the augmentation record, and overwrite its checkpoint. The operating system
    releases the lock when the holder exits, crashed or killed, so resuming a dead run is never blocked.
    NOTE: an advisory flock: on NFS, Linux maps it onto a byte-range lock the server sees."""
    handle, err = None, ""
    if dist.rank() == 0:
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock
            fcntl = None
        if fcntl is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(run_dir / ".lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
                handle.flush()
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                handle, err = None, (f"{run_dir} is being trained by {holder}; wait for it to finish (or stop it "
                                     "and pass --resume), or choose another --name")
    errors = dist.all_objects(err)
    if errors[0]:
        raise RuntimeError(errors[0])
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing the file releases the lock


def open_run(cfg: PretrainConfig, resume: bool) -> Run:
    """The run folder and, with `resume`, its last checkpoint. Rank 0 decides whether there is one; every
    rank then reads it itself, and the run stops on every rank, naming the ranks, when one cannot read it
    (checkpoints need a filesystem that every node sees) or when the ranks disagree on the step."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    run = Run(run_dir, plain(asdict(cfg)), None, 0)
    found = dist.all_objects(run.ckpt_path.is_file())[0]  # rank 0's view decides
    if not found:
        if resume and dist.rank() == 0:
            print(f"sassl pretrain: no checkpoint at {run.ckpt_path} yet; starting the run", flush=True)
        return run
    if not resume:
        raise FileExistsError(f"{run_dir} already has a checkpoint; pass resume=True (--resume) to continue it, "
                              "or choose another run name")
    try:
        state, err = torch.load(run.ckpt_path, map_location="cpu", weights_only=True), ""
    except Exception as e:  # noqa: BLE001 (any failure is reported, per rank, below)
        state, err = None, f"{type(e).__name__}: {e}"
    steps = dist.all_objects(state["step"] if state else err)
    bad = {r: s for r, s in enumerate(steps) if not isinstance(s, int)}
    if bad:
        raise RuntimeError(f"cannot resume: rank(s) {sorted(bad)} cannot read {run.ckpt_path} ({bad[min(bad)]}); "
                           "every rank reads rank 0's checkpoint, so runs_dir must be on a filesystem that every "
                           "node sees (NFS, Lustre, ...)")
    if len(set(steps)) > 1:
        raise RuntimeError(f"cannot resume: the ranks read different checkpoints at {run.ckpt_path} (steps "
                           f"{steps} by rank); runs_dir must be one shared folder, not a local disk per node")
    saved = {RENAMED.get(k, k): v for k, v in json.loads(state["config"]).items()}
    if _comparable(saved) != _comparable(run.cfg_dict):
        diff = {k: (saved.get(k), v) for k, v in _comparable(run.cfg_dict).items() if saved.get(k) != v}
        raise ValueError(f"{run.ckpt_path} was written by a different config (checkpoint vs now): {diff}")
    run.state, run.step = state, state["step"]
    return run


def save_checkpoint(run: Run, model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    step: int, epochs: int) -> None:
    """Rank 0 writes run.ckpt_path atomically: weights, optimiser (and float16 scaler) state, the global step,
    the epochs planned (a time budget's choice) and the run's config (checked when resuming)."""
    if dist.rank() != 0:
        return
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epochs": epochs,
             "config": json.dumps(run.cfg_dict)}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    with atomic_file(run.ckpt_path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(run: Run, model: nn.Module, opt: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None) -> None:
    """Restore what save_checkpoint wrote into the model, optimiser and scaler (nothing for a fresh run). The
    tensors are popped from run.state: the run need not hold a second copy of the weights on the host."""
    if run.state is None:
        return
    model.load_state_dict(run.state.pop("model"))
    opt.load_state_dict(run.state.pop("optimizer"))
    if scaler is not None and "scaler" in run.state:
        scaler.load_state_dict(run.state.pop("scaler"))


def build_model(cfg: PretrainConfig, device: torch.device) -> nn.Module:
    """The learner on `device` (channels-last), SyncBN across processes when asked (CUDA)."""
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, image_size=cfg.image_size, **learner_settings(cfg))
    model = model.to(device, memory_format=torch.channels_last)
    if dist.is_dist() and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def make_monitor(cfg: PretrainConfig, train_ds, base_name: str) -> KnnMonitor | None:
    """The kNN monitor on the dataset's held-out split, or None (knn_every 0, or a single pool)."""
    monitor_split = held_out_split(cfg.dataset)  # the test split, else val, or NAME@SPLIT; None for one pool
    if not cfg.knn_every or monitor_split is None:
        return None
    test_ds = get_dataset(base_name, split=monitor_split)
    return KnnMonitor(train_ds, test_ds, cfg.image_size, k=cfg.knn_k, max_train=cfg.knn_max_train,
                      max_test=cfg.knn_max_test, seed=cfg.seed, num_workers=loader_workers(cfg.num_workers))


def prune_metrics(run: Run, steps_per_epoch: int) -> None:
    """Keep the metric rows the resumed checkpoint had seen; rows logged after it (or a partial epoch's
    summary, or everything when starting afresh) are written again."""
    if dist.rank() != 0 or not run.metrics_file.exists():
        return

    def keep(row: dict) -> bool:
        partial_epoch = "epoch_seconds" in row and row["step"] == run.step and run.step % steps_per_epoch
        return run.state is not None and row["step"] <= run.step and not partial_epoch

    rows = read_metrics(run.metrics_file)
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


def checked_loss(loss: torch.Tensor, step: int, cfg: PretrainConfig) -> float:
    """The step's mean loss over ranks (one collective, the step's one host read); a non-finite loss on any
    rank stops every rank with the same message."""
    values = dist.all_values(float(loss), loss.device)
    bad = [r for r, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        where = f" on rank(s) {bad} of {len(values)}" if len(values) > 1 else ""
        raise FloatingPointError(f"loss is {values[bad[0]]}{where} at step {step}; the run stops (every rank). "
                                 f"Lower lr (now {cfg.lr}) or check the data, then resume from the last checkpoint")
    return sum(values) / len(values)


def epochs_within(budget_s: float, elapsed_s: float, epoch_s: float, monitor_s: float, done: int, epochs: int,
                  knn_every: int) -> int:
    """The most epochs, from `done` up to `epochs`, whose run ends within `budget_s` seconds: `elapsed_s`
    is spent when the steps of epoch `done` end; each further epoch's steps take `epoch_s`, and each kNN
    monitor pass from epoch `done` on (every `knn_every`-th epoch and the last; none if knn_every is 0)
    takes `monitor_s`."""
    def ends_at(e: int) -> float:
        passes = sum(1 for k in range(done, e + 1) if knn_every and (k % knn_every == 0 or k == e))
        return elapsed_s + (e - done) * epoch_s + passes * monitor_s
    return max([e for e in range(done + 1, epochs + 1) if ends_at(e) <= budget_s], default=done)


@dataclass
class Plan:
    """How long the run trains: `epochs` (a time budget may cut them) of `steps_per_epoch` steps, and the step
    this invocation stops at (max_steps; 0: none)."""

    steps_per_epoch: int
    epochs: int
    max_steps: int = 0

    @property
    def total_steps(self) -> int:  # the lr and momentum schedules end here
        return self.steps_per_epoch * self.epochs

    @property
    def planned(self) -> int:  # the step this invocation ends at
        return min(self.total_steps, self.max_steps) if self.max_steps else self.total_steps

    def stops(self, step: int) -> bool:
        return bool(self.max_steps) and step >= self.max_steps


class TimeBudget:
    """`minutes` of wall clock from the start of pretrain(). After each whole epoch, the epochs that still fit
    at the mean pace so far (epochs_within), never more than chosen before; rank 0's clock decides for every
    rank, and the schedules end with the epochs kept."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.time()
        self.step_times: list[float] = []  # each epoch's steps, without its monitor pass
        self.monitor_s = 0.0               # one kNN monitor pass

    @property
    def epoch_s(self) -> float:
        return sum(self.step_times) / len(self.step_times)

    def epochs_that_fit(self, done: int, epochs: int, knn_every: int) -> int:
        return dist.all_objects(epochs_within(self.seconds, time.time() - self.start, self.epoch_s, self.monitor_s,
                                              done, epochs, knn_every))[0]


class Progress:
    """The run's lines on the terminal (rank 0, when asked): the random-init kNN, the time budget's choice and
    one line per epoch with the time left."""

    def __init__(self, name: str, on: bool):
        self.name, self.on, self.epoch_times = name, on, []

    def say(self, text: str) -> None:
        if self.on:
            terminal_line(f"{self.name}: {text}")

    def epoch(self, epoch: int, plan: Plan, step: int, losses: list[float], row: dict, seconds: float) -> None:
        self.epoch_times.append(seconds)
        left = (plan.planned - step) / plan.steps_per_epoch * sum(self.epoch_times) / len(self.epoch_times)
        knn = f"  kNN {row['knn_top1']:.2f}%" if "knn_top1" in row else ""
        loss = f"  loss {sum(losses) / len(losses):.3f}" if losses else ""
        self.say(f"epoch {epoch + 1}/{plan.epochs}  step {step}/{plan.planned}{loss}{knn}  "
                 f"{row['images_per_second']:.0f} img/s  epoch {duration(seconds)}  left ~{duration(left)}")


@dataclass
class Trainer:
    """What a run trains with, built by set_up() before its first step."""

    cfg: PretrainConfig
    run: Run
    device: torch.device
    train_ds: object
    model: nn.Module       # the learner (what checkpoints hold)
    step_model: nn.Module  # what a step calls: the learner, under DDP and compile when asked
    style: StyleChoice
    views: TwoViews
    opt: torch.optim.Optimizer
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    monitor: KnnMonitor | None
    sampler: EpochSampler
    loader: object
    decoder: DeviceDecoder | None

    def prepare(self, batch, at_step: int) -> list[Prepared]:
        c1, c2 = self.decoder(batch[0], batch[1]) if self.decoder is not None else batch[:2]
        return prepare_batch(self.views, c1, c2, step_generator(self.cfg, at_step), self.cfg.accumulate)

    @property
    def base_lr(self) -> float:
        return scaled_lr(self.cfg)


def scaled_lr(cfg: PretrainConfig) -> float:
    """The peak learning rate: lr per 256 images, scaled to the global batch."""
    return cfg.lr * cfg.batch_size / 256


def set_up(cfg: PretrainConfig, resume: bool, progress: bool) -> Trainer:
    """The run folder (and its checkpoint when resuming), data, learner, SASSL op and views, optimiser (with
    the checkpoint's state), DDP / compile, kNN monitor and loader, in the order that seeds them."""
    run = open_run(cfg, resume)
    device = resolve_device(cfg.device)
    check_shared_memory(cfg.num_workers, cfg.batch_size // dist.world_size(), cfg.image_size, cfg.decode)
    torch.manual_seed(cfg.seed)
    base_name, _ = parse_name(cfg.dataset)  # NAME@SPLIT names the monitor's split
    train_ds = get_dataset(base_name, split="train")
    if len(train_ds) < cfg.batch_size:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than {cfg.dataset}'s train split ({len(train_ds)} images)")
    model = build_model(cfg, device)
    style = style_op(cfg, device, progress=progress and dist.rank() == 0)
    views = TwoViews(VIEWS[cfg.views], sassl=style.op, towers=cfg.sassl_towers).to(device)
    opt = make_optimizer(model, cfg.optimizer, scaled_lr(cfg), cfg.weight_decay)
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    load_checkpoint(run, model, opt, scaler)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.is_dist() else model
    sampler = EpochSampler(len(train_ds), cfg.batch_size, cfg.seed)
    crops = TwoCrops(train_ds, cfg.image_size, cfg.seed, scale=cfg.crop_scale, decode=cfg.decode)
    return Trainer(cfg, run, device, train_ds, model, torch.compile(ddp) if cfg.compile else ddp, style, views, opt,
                   dtype, scaler, make_monitor(cfg, train_ds, base_name), sampler,
                   make_loader(crops, sampler, cfg.batch_size // dist.world_size(), cfg.num_workers, device),
                   DeviceDecoder(cfg.image_size, device) if cfg.decode == "device" else None)


def write_run_config(t: Trainer, plan: Plan) -> None:
    """config.json: the resolved settings and what the run found (rank 0, at every start and resume)."""
    if dist.rank() != 0:
        return
    meta = {"git_commit": git_commit(), "world_size": dist.world_size(), "device": str(t.device),
            "train_images": len(t.train_ds), "steps_per_epoch": plan.steps_per_epoch,
            "dataset_source_used": t.train_ds.meta.get("source_used"), "style_source_used": t.style.used,
            "knn_monitor": t.monitor and {"train_images": len(t.monitor.train_idx), "test_images": len(t.monitor.test_idx)}}
    if t.style.bank is not None:
        meta["style_bank_size"] = len(t.style.bank)
    (t.run.dir / "figures").mkdir(parents=True, exist_ok=True)
    (t.run.dir / "config.json").write_text(json.dumps(t.run.cfg_dict | {"resolved": meta}, indent=1))


def train_epoch(t: Trainer, plan: Plan, epoch: int, step: int, runlog: RunLog, progress: bool
                ) -> tuple[int, int, list[float], list[Prepared]]:
    """The steps of one epoch from global step `step` (a resumed epoch skips the batches it had done), each
    logged; returns (step, images seen, losses, the last batch)."""
    from tqdm.auto import tqdm  # here, not at the top: train_step and its helpers run where tqdm is not installed

    cfg = t.cfg
    t.sampler.epoch, t.sampler.skip_batches = epoch, step - epoch * plan.steps_per_epoch
    t.model.train()
    seen, losses, batch = 0, [], []
    batches = prepared_ahead(DevicePrefetcher(t.loader, t.device), t.prepare, step, t.device, cfg.sassl_async)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{plan.epochs}", disable=not progress or dist.rank() != 0,
               initial=t.sampler.skip_batches, total=plan.steps_per_epoch)
    for batch in bar:
        lr = cosine_lr(step, plan.total_steps, int(cfg.warmup_epochs * plan.steps_per_epoch), t.base_lr)
        m = cosine_momentum(step, plan.total_steps, cfg.ema)
        loss, logs = train_step(t.step_model, t.views, t.opt, batch, lr, m, t.dtype, t.scaler)
        runlog.record_draws(batch)
        step += 1
        if cfg.log_augment:
            runlog.record_augment(step, batch, logs["per_image"])
        seen += sum(len(p.crop1) for p in batch) * dist.world_size()
        losses.append(checked_loss(loss, step, cfg))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.3g}")
        runlog.log({"step": step, "epoch": epoch + 1, "loss": losses[-1], "lr": lr, "momentum": m})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(t.run, t.model, t.opt, t.scaler, step, plan.epochs)
        if plan.stops(step):
            break
    return step, seen, losses, batch


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns the final metrics. Raises before training for a bad config or checkpoint.
    Build cfg with config_from_dict (that applies its recipe); under torchrun call `sassl.dist.setup()`
    first (the CLI does)."""
    budget = TimeBudget(cfg.time_budget)  # counts from here
    validate(cfg)
    with run_lock(Path(cfg.runs_dir) / cfg.name):
        t = set_up(cfg, resume, progress)
        run = t.run
        # a time budget's choice (made after each epoch, kept in the checkpoint) holds when the run is resumed
        epochs = run.state.get("epochs", cfg.epochs) if cfg.time_budget and run.state else cfg.epochs
        plan = Plan(t.sampler.batches_per_epoch(), epochs, cfg.max_steps)
        write_run_config(t, plan)
        prune_metrics(run, plan.steps_per_epoch)
        runlog = RunLog(run.dir, run.cfg_dict, cfg.tensorboard, cfg.wandb, resume_step=run.step)
        say = Progress(cfg.name, progress and dist.rank() == 0)
        if run.state is None and t.monitor is not None:  # the random-init baseline a run must beat
            t0 = time.time()
            knn0 = t.monitor(t.model.backbone)  # every rank embeds its share
            budget.monitor_s = time.time() - t0
            runlog.log({"epoch": 0, "step": 0, "knn_top1": knn0})
            say.say(f"random-init kNN {knn0:.2f}% (the bar to beat); {plan.planned} steps to go, run folder {run.dir}")
        result = finished_result(run, plan)
        step, epoch = run.step, run.step // plan.steps_per_epoch
        while epoch < plan.epochs:
            t0 = time.time()
            step, seen, losses, batch = train_epoch(t, plan, epoch, step, runlog, progress)
            budget.step_times.append(time.time() - t0)  # the epoch's steps; its monitor pass comes below
            row = {"epoch": epoch + 1, "step": step, "epoch_seconds": round(budget.step_times[-1], 2),
                   "images_per_second": round(seen / max(1e-9, budget.step_times[-1]), 1)}
            if cfg.time_budget and run.state is None and step == plan.steps_per_epoch * (epoch + 1):
                kept = budget.epochs_that_fit(epoch + 1, plan.epochs, cfg.knn_every)
                if epoch == 0 or kept < plan.epochs:
                    plan.epochs = row["epochs_in_budget"] = kept
                    say.say(f"time budget {duration(budget.seconds)}: training {kept} of {cfg.epochs} epochs (epochs "
                            f"take {duration(budget.epoch_s)}, a kNN pass {duration(budget.monitor_s)})")
            if t.monitor is not None and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == plan.epochs or plan.stops(step)):
                row["knn_top1"] = t.monitor(t.model.backbone)
            runlog.log(row)
            runlog.epoch_end(step, t.views, batch if epoch == run.step // plan.steps_per_epoch or "knn_top1" in row else None)
            result = row
            save_checkpoint(run, t.model, t.opt, t.scaler, step, plan.epochs)
            say.epoch(epoch, plan, step, losses, row, time.time() - t0)
            if plan.stops(step):
                break
            epoch += 1
        finish(run, runlog, result)
        return result


def finished_result(run: Run, plan: Plan) -> dict:
    """The last epoch row of a run resumed after its end (reported again), else {}."""
    if run.step < plan.total_steps or not run.metrics_file.exists():
        return {}
    epoch_rows = [r for r in read_metrics(run.metrics_file) if "epoch_seconds" in r]
    return epoch_rows[-1] if epoch_rows else {}


def finish(run: Run, runlog: RunLog, result: dict) -> None:
    """Close the loggers; rank 0 draws the curves and writes metrics.json; no rank leaves before it is done."""
    runlog.close()
    if dist.rank() == 0:
        training_curves(run.metrics_file, run.dir / "figures" / "curves")
        (run.dir / "metrics.json").write_text(json.dumps(result, indent=1))
    dist.barrier()
