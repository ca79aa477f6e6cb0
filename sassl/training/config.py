"""The settings of a pre-training run: `PretrainConfig`, the one place they are layered (recipe, learner, given
values) and validated, and what they give the learner and the SASSL op."""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

import torch

from sassl import dist
from sassl.backbones import check_backbone
from sassl.config import check_bounds, check_range, from_dict, setting
from sassl.data.loader import TwoCrops
from sassl.learners import LEARNERS, MomentumTwoTower
from sassl.optim import OPTIMIZERS
from sassl.precision import check_precision
from sassl.recipes import recipe_values, with_recipe
from sassl.stylizer import DEFAULTS as SASSL_DEFAULTS, StyleChoice, check_settings, make_style_op
from sassl.views import SASSL_CROPS, TOWERS, VIEWS

_OWN = LEARNERS["mocov2"].run  # the default learner's settings (PretrainConfig.learner)


@dataclass
class PretrainConfig:
    """Flat, typed run settings. Each field's help text (sassl.config.setting) is its `sassl pretrain --help`
    line; the pretrain notebook's parameters cell uses the same names and defaults."""

    name: str = setting("pretrain", "run folder: <runs_dir>/<name>")
    recipe: str = setting("", "named settings under the ones given (which win): imagenet-resnet50, "
                          "imagenet-resnet50x4, imagenet-vit-b-mocov3 (sassl.recipes)")
    learner: str = setting("mocov2", "mocov2 (the SASSL paper's, no queue), mocov2-queue (classic), simclr, byol, "
                           "mocov3, barlowtwins, vicreg, dino; its own views, heads, momentum and temperature come with it "
                           "(sassl.learners.LEARNERS)")
    backbone: str = setting("resnet18", "resnet18, resnet34, resnet50, resnet50x4 (every width x4), vit_tiny, "
                            "vit_s_16, vit_b_16, or timm:NAME for any timm model (random init; timm:NAME@pretrained "
                            "for timm's weights, from the Hugging Face Hub)")
    small_images: bool = setting(False, "CIFAR stem (3x3 conv, no max pool); false: ImageNet stem (cheaper on CPU)")
    dataset: str = setting("objects", "registry name or imagefolder:PATH; 'train' trains, test (else val, or "
                           "NAME@SPLIT) feeds the kNN monitor")
    image_size: int = setting(64, "side of the random resized crops, px")
    crop_scale: tuple = setting((0.08, 1.0), "random resized crop area range, as a share of the image (BYOL: 0.08-1)")
    style: str = setting("pbn", "SASSL style source: none (off), batch, noise, content, a dataset name, a folder or a "
                         "bank .pt")
    p: float = setting(SASSL_DEFAULTS["p"], "SASSL probability per image")
    alpha: tuple = setting(SASSL_DEFAULTS["alpha"], "embedding blend range: z is alpha P(style) + (1 - alpha) "
                           "P(content)")
    beta: tuple = setting(SASSL_DEFAULTS["beta"], "pixel blend range: y is beta T(content, z) + (1 - beta) content")
    layers: int = setting(SASSL_DEFAULTS["layers"], "stylize only the first k of the 13 CIN layers (the rest get the "
                          "content's code)")
    views: str = setting(_OWN["views"], "view augmentations: byol, simclr, mocov2 (classic), mocov3 "
                         "(sassl.views.VIEWS); default: the learner's own")
    # NOTE: the paper embeds styles at 256 px (Magenta's size) and does not say at what size the content is
    # embedded. The same painting embedded at 64 and at 256 px lies farther apart (mean distance 5.06) than two
    # paintings at 256 (3.28) (docs/RESULTS.md), so bank, in-batch and content codes are all embedded at one
    # size. 0 follows the crop size: free at 64 px on a CPU, where 256 px costs about 60% more per step.
    embed_size: int = setting(0, "side (px) at which the style predictor embeds bank styles, in-batch styles and the "
                              "content; 0: image_size (the imagenet recipes use 256, the paper's)")
    sassl_towers: str = setting("both", "which towers see view 1 stylized: both (the default reading, "
                                "sassl.views.TOWERS) or online (the target tower gets view 1 unstylized); momentum "
                                "learners only")
    sassl_crops: str = setting("global1", "which crops SASSL stylizes: global1 (the first view, the paper's), global "
                               "(both global views) or all (the local crops too; sassl.views.SASSL_CROPS)")
    local_crops: int = setting(0, "multi-crop: small crops per image besides the two global ones (DINO: 8); learners "
                               "that take them only (dino)")
    local_size: int = setting(0, "side of the local crops, px; 0: 3/7 of image_size (DINO's 96 of 224), a multiple of 8")
    local_scale: tuple = setting((0.05, 0.4), "local crops' area range, as a share of the image (DINO: 0.05-0.4)")
    # NOTE: a CPU-scale budget (9 epochs of batch 32 = 657 steps; lr 2.0 per 256 is 0.25 per step), sized
    # for a 2-core CPU, where the main job's 18-minute time budget keeps the epochs that fit (all 9 on a
    # 2-core AVX2 CPU, fewer on a slower one) so that it ends within 20 minutes; the paper pre-trains on
    # ImageNet for hundreds of epochs
    # (docs/DESIGN.md §2.3; the measurements behind this choice: docs/RESULTS.md, "Main-job budget")
    epochs: int = setting(9, "passes over the train split")
    # NOTE: not in the paper. A main job that must fit any 2-core machine gets a wall-clock budget: after
    # each epoch the run keeps as many of `epochs` as still fit at its pace so far (the schedules end with them)
    time_budget: float = setting(0.0, "minutes the run may take (0: no limit); after each epoch it keeps only the "
                                 "epochs that still fit at the pace so far (make demo: 18)")
    batch_size: int = setting(32, "global batch, split over processes")
    optimizer: str = setting("lars", "lars, sgd (momentum 0.9) or adamw (mocov3's)")
    lr: float = setting(2.0, "base learning rate per 256 images (scaled by batch_size / 256)")
    weight_decay: float = setting(1e-6, "L2 on weights; biases and norm layers exempt")
    weight_decay_end: float = setting(-1.0, "weight decay at the last step, reached on a cosine from weight_decay "
                                      "(DINO's 0.04 -> 0.4); -1: weight_decay throughout")
    warmup_epochs: float = setting(1.0, "linear learning-rate warm-up, then cosine decay to 0")
    ema: float = setting(_OWN["ema"], "base target momentum (momentum learners), cosine schedule up to 1.0; default: "
                         "the learner's own")
    temperature: float = setting(_OWN["temperature"], "contrastive temperature (mocov2, simclr, mocov3); default: the "
                                 "learner's own")
    proj_hidden: int = setting(_OWN["proj_hidden"], "hidden width of the projector (and predictor) MLPs; default: the "
                               "learner's own")
    proj_dim: int = setting(_OWN["proj_dim"], "output width of the projector; default: the learner's own")
    seed: int = setting(0, "seeds init, data order, crops and augmentations")
    device: str = setting("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    precision: str = setting("auto", "auto, fp32, bf16 or fp16: autocast for the learner's step (losses, "
                             "normalisations, BatchNorm statistics, the EMA and the optimiser stay float32). auto: "
                             "bf16 on CUDA from compute capability 8.0, fp16 + GradScaler below; fp32 on the CPU "
                             "(bf16 there is --precision bf16: docs/pretraining.md). Fixed for a run when it starts")
    sync_bn: bool = setting(False, "SyncBatchNorm across processes (CUDA only in PyTorch)")
    num_workers: int = setting(-1, "DataLoader workers per process (decoding, crops); -1: this node's cores per "
                               "process, less one, at most 16")
    decode: str = setting("fast", "where JPEGs are decoded: fast (loader workers, only as far as the crops need) or "
                          "device (nvJPEG on the GPU, for hosts whose CPUs cannot keep up)")
    sassl_async: bool = setting(False, "stylize batch k+1 on a side CUDA stream while step k trains (on CPU the same "
                                "code runs in order, same result)")
    compile: bool = setting(False, "torch.compile the learner's step (minutes of compiling first; worth it for long "
                            "GPU runs)")
    checkpoint_every: int = setting(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    knn_k: int = setting(20, "neighbours of the kNN monitor")
    knn_every: int = setting(3, "epochs between kNN monitor passes (the last epoch always has one); 0: no monitor")
    knn_max_train: int = setting(20000, "kNN monitor: at most this many train images (a seeded subset; 0: all)")
    knn_max_test: int = setting(5000, "kNN monitor: at most this many held-out images (a seeded subset; 0: all)")
    probe_epochs: int = setting(30, "the monitor's linear probe: epochs over its train features at each kNN pass "
                                "(fit afresh, float32; its top-1 is probe_top1 beside knn_top1 and RankMe); 0: no probe")
    accumulate: int = setting(1, "micro-batches per step (gradient accumulation; the step sees batch_size images)")
    dist_timeout: float = setting(60.0, "minutes a process waits for the others in a collective before the run stops")
    max_steps: int = setting(0, "stop after N steps in total (0: no limit; smoke tests)")
    runs_dir: str = setting("runs", "the runs root that holds <name>/ (one name for it in every config)")
    tensorboard: bool = setting(True, "TensorBoard event files in <run>/tensorboard/ (scalars, SASSL draws, views): "
                                "tensorboard --logdir runs")
    # NOTE: reading each step's per-image losses to the host makes the step wait for the device (a sync per step)
    log_augment: bool = setting(False, "per image and step: SASSL's draws (stylized, alpha, beta, style row) and the "
                                "image's loss (its two directions averaged) in <run>/augment.bin (rank 0's images; "
                                "sassl.tracking.read_augment)")
    wandb: str = setting("", "a Weights & Biases project to log to as well (needs the wandb extra: pip install "
                         "sassl[wandb]; without a network set WANDB_MODE to offline)")

    # fields that may differ between a run and its resumption
    RESUME_FREE = ("epochs", "time_budget", "num_workers", "device", "runs_dir", "checkpoint_every", "knn_every",
                   "knn_max_train", "knn_max_test", "probe_epochs", "max_steps", "accumulate", "dist_timeout",
                   "sassl_async", "compile", "decode", "tensorboard", "wandb", "log_augment")


def config_from_dict(values: dict) -> PretrainConfig:
    """The validated config that `values` (the settings given: flags, notebook parameters, JSON) describe,
    on top of their recipe's settings and their learner's own (sassl.recipes): given values win. Unknown
    keys and wrong types raise ValueError naming the parameter. The one place these layers are applied."""
    cfg = from_dict(PretrainConfig, with_recipe(values, PretrainConfig.learner))
    validate(cfg)
    return cfg


RENAMED = {"out_dir": "runs_dir"}  # config keys of older runs -> their current names
# settings added since runs were first recorded -> the value that does what the code did before them (for the
# resume-free probe_epochs, which changes no trained weight, today's default)
ADDED = {"sassl_crops": "global1", "local_crops": 0, "local_size": 0, "local_scale": [0.05, 0.4], "probe_epochs": 30,
         "weight_decay_end": -1.0}


def upgraded(values: dict) -> dict:
    """A config of an older run (its config.json, a checkpoint's, a study record's) in today's keys: renamed keys,
    amp (mixed precision on CUDA only, before --precision) as precision auto, or fp32 where it was off, and the
    settings added since at the values that do what the code then did (ADDED)."""
    out = {RENAMED.get(k, k): v for k, v in values.items()}
    if "amp" in out:
        out.setdefault("precision", "auto" if out.pop("amp") else "fp32")
    for k, v in ADDED.items():
        out.setdefault(k, v)
    return out


# the numeric settings' intervals (checked by validate; NaN and infinity are refused when the value is read)
BOUNDS = {"epochs": ">=1", "batch_size": ">=2", "image_size": ">=16", "embed_size": ">=0", "knn_k": ">=1",
          "local_crops": ">=0", "local_size": ">=0",
          "knn_every": ">=0", "probe_epochs": ">=0", "knn_max_train": ">=0", "knn_max_test": ">=0", "accumulate": ">=1",
          "num_workers": ">=-1", "lr": ">0", "weight_decay": ">=0", "warmup_epochs": ">=0", "ema": "[0,1]", "temperature": ">0",
          "proj_hidden": ">=1", "proj_dim": ">=1", "max_steps": ">=0", "checkpoint_every": ">=0"}


def validate(cfg: PretrainConfig) -> None:
    """Clear errors for impossible settings, before any data is loaded."""
    if cfg.learner not in LEARNERS:
        raise ValueError(f"learner: unknown {cfg.learner!r}; available: {', '.join(LEARNERS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.views not in VIEWS:
        raise ValueError(f"views: expected one of {', '.join(VIEWS)}, got {cfg.views!r}")
    try:
        check_backbone(cfg.backbone, cfg.small_images, cfg.image_size)
    except KeyError as e:  # an unknown name: the setting's error like every other
        raise ValueError(f"backbone: {e.args[0]}") from None
    check_bounds(cfg, BOUNDS)
    if cfg.batch_size % (dist.world_size() * cfg.accumulate):
        raise ValueError(f"batch_size: {cfg.batch_size} does not split into {dist.world_size()} processes x "
                         f"{cfg.accumulate} micro-batches (accumulate)")
    if cfg.weight_decay_end < 0 and cfg.weight_decay_end != -1:
        raise ValueError(f"weight_decay_end: must be >= 0 (or -1: weight_decay throughout), got {cfg.weight_decay_end}")
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
    check_precision(cfg.precision)
    check_crops(cfg)
    if cfg.decode not in TwoCrops.DECODE:
        raise ValueError(f"decode: expected one of {', '.join(TwoCrops.DECODE)}, got {cfg.decode!r}")
    recipe_values(cfg.recipe)  # an unknown recipe raises, listing the known ones
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError(f"wandb: project {cfg.wandb!r} given but wandb is not installed; "
                         "pip install 'sassl[wandb]' (or leave wandb empty)")
    if cfg.compile and cfg.sync_bn:
        warnings.warn("compile with sync_bn: SyncBatchNorm breaks torch.compile's graph at every norm layer and "
                      "this pair has not been measured on a GPU; expect little gain from compile", stacklevel=2)


def local_size(cfg: PretrainConfig) -> int:
    """The local crops' side: cfg.local_size, or 3/7 of image_size (DINO's 96 of 224) rounded to a multiple of 8."""
    return cfg.local_size or max(16, round(cfg.image_size * 96 / 224 / 8) * 8)


def check_crops(cfg: PretrainConfig) -> None:
    """sassl_crops and multi-crop: a known choice; local crops only for a learner that takes them, cut in the
    loader workers (not decode device), a size its backbone takes; the target tower's clean view only with
    global1."""
    if cfg.sassl_crops not in SASSL_CROPS:
        raise ValueError(f"sassl_crops: expected one of {', '.join(SASSL_CROPS)}, got {cfg.sassl_crops!r}")
    if cfg.sassl_crops != "global1" and cfg.sassl_towers != "both":
        raise ValueError(f"sassl_crops {cfg.sassl_crops}: the target tower would see a stylized view; use "
                         "sassl_towers both (or sassl_crops global1)")
    if not cfg.local_crops:
        return
    if not getattr(LEARNERS[cfg.learner].cls, "MULTI_CROP", False):
        takes = [n for n, spec in LEARNERS.items() if getattr(spec.cls, "MULTI_CROP", False)]
        raise ValueError(f"local_crops: {cfg.learner} takes two views; multi-crop is for {', '.join(takes)} (set "
                         "local_crops 0)")
    if cfg.decode == "device":
        raise ValueError("local_crops: multi-crop is cut in the loader workers; use decode fast")
    check_range("local_scale", cfg.local_scale, positive=True)
    size = local_size(cfg)
    if size < 16 or size > cfg.image_size:
        raise ValueError(f"local_size: {size} px must lie in [16, image_size {cfg.image_size}]")
    try:
        check_backbone(cfg.backbone, cfg.small_images, size)
    except ValueError as e:
        raise ValueError(f"local_size: {e}") from None


def learner_settings(cfg: PretrainConfig) -> dict:
    """The settings a config gives a learner; create_learner keeps those the learner's class declares."""
    return {"proj_hidden": cfg.proj_hidden, "proj_dim": cfg.proj_dim, "pred_hidden": cfg.proj_hidden,
            "temperature": cfg.temperature or None}  # 0: the learner's own


def scaled_lr(cfg: PretrainConfig) -> float:
    """The peak learning rate: lr per 256 images, scaled to the global batch."""
    return cfg.lr * cfg.batch_size / 256


def style_op(cfg: PretrainConfig, device: torch.device, progress: bool = True) -> StyleChoice:
    """The SASSL op a config asks for (op None when style is 'none') and where its styles came from."""
    size = cfg.embed_size or cfg.image_size  # one size for the bank's styles and the content (embed_size)
    return make_style_op(cfg.style, p=cfg.p, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers, embed_size=size,
                         image_size=size, progress=progress, device=device)
