"""Named pre-training recipes (`--recipe NAME`): settings under the ones a run is given.

Given flags (and JSON config values) win over the recipe; in a notebook, whose parameters cell holds every
default, the parameters changed from their defaults win. The resolved values (and the recipe's name) are
what config.json records.

NOTE: the SASSL paper states it adds SASSL to each learner "without hyperparameter tuning", i.e. on
the learner's own ImageNet recipe, but its appendix table (A.3) was not available to us offline, so
`imagenet-resnet50` takes the published ImageNet recipe of BYOL (Grill et al. 2020, 1000 epochs:
batch 4096, LARS, base lr 0.2 per 256 images, weight decay 1.5e-6, 10 warm-up epochs, 4096/256 heads,
target momentum 0.996 on a cosine schedule to 1) with SASSL's MoCo v2 variant (temperature 0.1) and the
GPU settings of that scale (bf16 autocast, SyncBN, 10 loader workers per GPU). Issue 17 (fidelity)
checks it against A.3.
"""
from __future__ import annotations

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
        "amp": True,
        "sync_bn": True,
        "checkpoint_every": 500,  # steps (~1.6 epochs at batch 4096): a killed run loses minutes, not hours
        "knn_every": 10,
    },
}


def recipe_values(name: str) -> dict:
    """The settings of recipe `name` ('' : none); an unknown name raises, listing the recipes."""
    if not name:
        return {}
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown {name!r}; available: {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def with_recipe(values: dict) -> dict:
    """Given settings on top of their recipe's (values['recipe'], if any): the given ones win. The one rule
    for applying a recipe; config_from_dict (flags, JSON) and the notebooks call it."""
    recipe = values.get("recipe") or ""
    return recipe_values(recipe if isinstance(recipe, str) else "") | values
