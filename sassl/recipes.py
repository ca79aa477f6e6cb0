"""Settings under the ones a run is given, in layers: PretrainConfig's defaults, then the learner's own
(sassl.learners.LEARNERS: its paper's views, heads, target momentum, temperature), then a named recipe
(`--recipe NAME`), then the settings given, which win. In a notebook, whose parameters cell holds every
default, the parameters changed from their defaults count as given. The resolved values (and the recipe's
name) are what config.json records.

NOTE: the SASSL paper states it adds SASSL to each learner "without hyperparameter tuning", i.e. on
the learner's own ImageNet recipe, but its appendix table (A.3) was not available to us offline, so
`imagenet-resnet50` takes the published ImageNet recipe of BYOL (Grill et al. 2020, 1000 epochs:
batch 4096, LARS, base lr 0.2 per 256 images, weight decay 1.5e-6, 10 warm-up epochs, 4096/256 heads,
target momentum 0.996 on a cosine schedule to 1) with SASSL's MoCo v2 variant (temperature 0.1) and the
GPU settings of that scale (bf16 autocast, SyncBN, 10 loader workers per GPU); it has not been checked
against the paper's A.3.
"""
from __future__ import annotations

from sassl.learners import learner_run_settings

RECIPES: dict[str, dict] = {
    "imagenet-resnet50": {
        "learner": "mocov2",
        "backbone": "resnet50",
        "small_images": False,
        "dataset": "imagefolder:/data/imagenet",  # train/ + val/ class folders; override with --dataset
        "image_size": 224,
        "crop_scale": (0.08, 1.0),
        "style": "pbn",  # $SASSL_PBN_DIR: a folder of Painter by Numbers' 79k paintings
        "epochs": 1000,
        "batch_size": 4096,  # global; use --accumulate N where 4096 / (GPUs * N) images per step do not fit
        "optimizer": "lars",
        "lr": 0.2,
        "weight_decay": 1.5e-6,
        "warmup_epochs": 10.0,
        "ema": 0.996,
        "temperature": 0.1,
        "proj_hidden": 4096,
        "proj_dim": 256,
        "precision": "auto",
        "sync_bn": True,
        "checkpoint_every": 500,  # steps (~1.6 epochs at batch 4096): a killed run loses minutes, not hours
        "knn_every": 10,
        "embed_size": 256,  # styles and contents embedded at Magenta's 256 px
    },
}
# Appendix A.10: SASSL with other backbones. ResNet-50 (4x) on the same recipe (375 M parameters: where 4096
# images per step do not fit, --accumulate); MoCo v3 with ViT-B/16 on MoCo v3's own ViT recipe (300 epochs,
# batch 4096, AdamW lr 1.5e-4 per 256, weight decay 0.1, 40 warm-up epochs, T 0.2, momentum 0.99 -> 1).
RECIPES["imagenet-resnet50x4"] = RECIPES["imagenet-resnet50"] | {"backbone": "resnet50x4"}
RECIPES["imagenet-vit-b-mocov3"] = {k: v for k, v in RECIPES["imagenet-resnet50"].items() if k not in ("small_images",)} | {
    "learner": "mocov3", "backbone": "vit_b_16", "views": "mocov3", "epochs": 300, "optimizer": "adamw", "lr": 1.5e-4,
    "weight_decay": 0.1, "warmup_epochs": 40.0, "ema": 0.99, "temperature": 0.2}


def recipe_values(name: str) -> dict:
    """The settings of recipe `name` ('' : none); an unknown name raises, listing the recipes."""
    if not name:
        return {}
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown {name!r}; available: {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def with_recipe(values: dict, default_learner: str) -> dict:
    """Given settings on top of their recipe's (values['recipe'], if any), on top of their learner's own
    (sassl.learners.LEARNERS; the learner given, else the recipe's, else `default_learner`): the given ones win.
    The one rule for layering settings; config_from_dict (flags, JSON, notebooks) calls it."""
    recipe = values.get("recipe") or ""
    under = recipe_values(recipe if isinstance(recipe, str) else "")
    learner = values.get("learner") or under.get("learner") or default_learner
    return learner_run_settings(learner) | under | values
