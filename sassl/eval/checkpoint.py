"""Load the encoder (backbone) of a pre-training run for evaluation: strict, never a silent random fall-back."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from sassl.backbones import create_backbone


def resolve_checkpoint(spec: str, runs_dir: str = "runs") -> Path:
    """A checkpoint file from a path, a run folder, or a run name under runs_dir."""
    for cand in (Path(spec), Path(runs_dir) / spec):
        if cand.is_file():
            return cand
        if (cand / "checkpoints" / "last.pt").is_file():
            return cand / "checkpoints" / "last.pt"
    raise FileNotFoundError(f"encoder {spec!r}: no checkpoint file, run folder with checkpoints/last.pt, or run "
                            f"name under {runs_dir}/ (give a .pt path, a run name, or random:BACKBONE for a baseline)")


def load_encoder(spec: str, runs_dir: str = "runs", device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(backbone in eval mode, info). spec: run name / folder / checkpoint file from `sassl pretrain`, or
    `random:resnet18[:small]` for an explicitly random-init baseline.

    The checkpoint's config decides the architecture; its backbone weights must match it key by key
    (strict), else a ValueError names the missing / unexpected keys."""
    if spec.startswith("random:"):
        name = spec[len("random:"):]  # BACKBONE[:small]; the backbone may be timm:NAME
        small = name.endswith(":small")
        name = name.removesuffix(":small")
        torch.manual_seed(0)
        try:
            net, dim = create_backbone(name, small)
        except (KeyError, ValueError) as e:  # an unknown name, or a ViT with the small-image stem
            raise ValueError(f"encoder {spec!r}: {e.args[0]}") from None
        return net.to(device).eval(), {"encoder": spec, "backbone": name, "small_images": small, "dim": dim,
                                        "random_init": True}
    path = resolve_checkpoint(spec, runs_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a `sassl pretrain` checkpoint (needs 'model' and 'config' entries)")
    cfg = json.loads(state["config"])
    # the checkpoint holds the weights: timm:NAME@pretrained is rebuilt without fetching timm's again
    net, dim = create_backbone(cfg["backbone"].removesuffix("@pretrained"), cfg["small_images"],
                               cfg.get("image_size", 224))
    weights = {k[len("backbone."):]: v for k, v in state["model"].items() if k.startswith("backbone.")}
    if not weights:
        raise ValueError(f"{path}: the model state has no backbone.* weights")
    missing, unexpected = net.state_dict().keys() - weights.keys(), weights.keys() - net.state_dict().keys()
    if missing or unexpected:
        raise ValueError(f"{path}: backbone weights do not match {cfg['backbone']} (small_images="
                         f"{cfg['small_images']}): missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: backbone weights do not fit {cfg['backbone']}: {e}") from None
    info = {"encoder": str(spec), "checkpoint": str(path), "backbone": cfg["backbone"], "small_images": cfg["small_images"],
            "dim": dim, "step": state.get("step"), "pretrain_config": cfg, "random_init": False}
    return net.to(device).eval(), info
