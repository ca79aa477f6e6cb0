"""Take a pre-trained encoder out of the workbench: `sassl export RUN --format torchvision|timm|sassl`.

The folder it writes loads without sassl: model.safetensors (the backbone under the key names of the chosen
library's model of the same architecture, classifier removed), config.json (architecture, input size,
normalisation, SASSL settings, the run's resolved config) and README.md (a model card with the run's
evaluation numbers and the three lines that load it). `--with-heads` adds the full checkpoint (heads,
target tower, optimiser) for continuing pre-training; `--push-to-hub REPO` uploads the folder."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sassl.backbones import BACKBONES, is_timm, is_vit
from sassl.eval.checkpoint import load_encoder
from sassl.eval.report import read_summary
from sassl.storage import atomic_file
from sassl.views import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("torchvision", "timm", "sassl")
TIMM_VIT = {"vit_tiny": "vit_tiny_patch16_224", "vit_s_16": "vit_small_patch16_224", "vit_b_16": "vit_base_patch16_224"}
PLAIN_RESNETS = ("resnet18", "resnet34", "resnet50")  # the same module, and key names, in torchvision and timm


@dataclass
class Target:
    """How the chosen library builds the backbone: `code` is the Python expression (the model card prints it)
    and `rename` maps our parameter names to the library's."""

    imports: str
    code: str
    rename: dict | None = None  # our key -> theirs; None: the same names


def vit_kwargs(backbone: str, image_size: int) -> dict:
    """torchvision VisionTransformer arguments of one of our ViTs."""
    kw = BACKBONES[backbone][0].keywords
    return {"image_size": image_size, "patch_size": kw["patch_size"], "num_layers": kw["num_layers"],
            "num_heads": kw["num_heads"], "hidden_dim": kw["hidden_dim"], "mlp_dim": kw["mlp_dim"]}


def timm_vit_names(num_layers: int) -> dict:
    """torchvision ViT parameter name -> timm's (VisionTransformer: blocks.i.attn.qkv, mlp.fc1, ...)."""
    names = {"class_token": "cls_token", "encoder.pos_embedding": "pos_embed", "conv_proj.weight": "patch_embed.proj.weight",
             "conv_proj.bias": "patch_embed.proj.bias", "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias"}
    parts = {"ln_1": "norm1", "self_attention.in_proj_weight": "attn.qkv.weight", "self_attention.in_proj_bias": "attn.qkv.bias",
             "self_attention.out_proj": "attn.proj", "ln_2": "norm2", "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    for i in range(num_layers):
        for ours, theirs in parts.items():
            for suffix in ("", ".weight", ".bias"):
                if ours.endswith(("weight", "bias")) != (suffix == ""):
                    continue
                names[f"encoder.layers.encoder_layer_{i}.{ours}{suffix}"] = f"blocks.{i}.{theirs}{suffix}"
    return names


def target_for(fmt: str, backbone: str, small_images: bool, image_size: int, timm_img_size: int | None = None) -> Target:
    """The model of `fmt` that holds this backbone's weights, or ValueError naming the alternative.
    `timm_img_size`: the input size a timm:NAME backbone was built for (None: a model without one)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    ours = Target("import sassl.backbones",
                  f"sassl.backbones.create_backbone({backbone!r}, small_images={small_images}, image_size={image_size})[0]")
    if fmt == "sassl":
        return ours
    if is_timm(backbone):  # timm's own module, timm's own names
        if fmt == "torchvision":
            raise ValueError(f"--format torchvision: {backbone} is a timm model; use --format timm (or sassl)")
        size = f", img_size={timm_img_size}, dynamic_img_size=True" if timm_img_size else ""
        model = backbone[len("timm:"):].removesuffix("@pretrained")
        return Target("import timm", f"timm.create_model({model!r}, pretrained=False, num_classes=0{size})")
    other = "timm" if fmt == "torchvision" else "torchvision"
    if small_images:
        raise ValueError(f"--format {fmt}: {backbone} with the small-image stem (3x3 stride-1 first conv, no max pool) "
                         f"has no {fmt} model; use --format sassl (our module: sassl/backbones.py, create_backbone)")
    if backbone in PLAIN_RESNETS:
        if fmt == "torchvision":
            return Target("import torch, torchvision", f"torchvision.models.{backbone}(); model.fc = torch.nn.Identity()")
        return Target("import timm", f"timm.create_model({backbone!r}, pretrained=False, num_classes=0)")
    if is_vit(backbone):
        kw = vit_kwargs(backbone, image_size)
        if fmt == "torchvision":
            args = ", ".join(f"{k}={v}" for k, v in kw.items())
            return Target("import torch, torchvision",
                          f"torchvision.models.VisionTransformer({args}); model.heads = torch.nn.Identity()")
        return Target("import timm", f"timm.create_model({TIMM_VIT[backbone]!r}, pretrained=False, num_classes=0, "
                                     f"img_size={image_size})", timm_vit_names(kw["num_layers"]))
    raise ValueError(f"--format {fmt}: {backbone} (SimCLR's ResNet-50 with every width times {backbone[-1]}) has no "
                     f"{fmt} or {other} model ({fmt}'s wide_resnet50_2 widens only the bottlenecks); use --format sassl "
                     "(our module: sassl/backbones.py, wide_resnet50)")


def export_state(backbone: torch.nn.Module, target: Target) -> dict[str, torch.Tensor]:
    """The backbone's parameters and buffers under the target's names, contiguous and unshared (safetensors)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    if target.rename is None:
        return state
    missing = state.keys() - target.rename.keys()
    if missing:
        raise ValueError(f"export: no target name for {sorted(missing)[:5]}")
    return {target.rename[k]: v for k, v in state.items()}


def model_card(name: str, fmt: str, target: Target, info: dict, rows: list[dict]) -> str:
    """README.md of the exported folder: what was trained, for how long, its numbers, how to load it."""
    cfg = info["pretrain_config"]
    sassl = "off" if cfg.get("style") == "none" else (
        f"style source `{cfg['style']}`, p {cfg['p']}, alpha in {cfg['alpha']}, beta in {cfg['beta']}, "
        f"first {cfg['layers']} of 13 layers")
    table = "\n".join(f"| {r['target']} | {r['protocol']} | {r['top1_mean']:.2f} +- {r['top1_std']:.2f} | {r['n']} |"
                      for r in rows)
    evals = (f"| target | protocol | top-1 (%) | runs |\n|---|---|---|---|\n{table}" if rows else
             f"Not evaluated yet: `sassl evaluate {name}` writes runs/{name}/eval/, then export again.")
    return f"""# {name}: a {cfg['backbone']} encoder pre-trained with {cfg['learner']}{' + SASSL' if cfg.get('style') != 'none' else ''}

Pre-trained with the SASSL workbench (`sassl pretrain`): {cfg['learner']} on `{cfg['dataset']}`, {info['step']} steps of
batch {cfg['batch_size']} at {cfg['image_size']} px ({cfg['epochs']} epochs planned), seed {cfg['seed']}.
SASSL: {sassl}. The full resolved config is in config.json (`pretrain_config`).

## Evaluation (from the run's eval/)

{evals}

## Load it ({fmt})

```python
{target.imports}
from safetensors.torch import load_file
model = {target.code}
model.load_state_dict(load_file("model.safetensors"))  # strict
```

Inputs: RGB in [0, 1], normalised with mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}, {cfg['image_size']} px
(the pre-training crop size). The model returns the {info['dim']}-d feature the workbench evaluates (no classifier).
"""


def export(spec: str, out: str | Path | None = None, fmt: str = "torchvision", runs_dir: str = "runs",
           with_heads: bool = False) -> Path:
    """Write the export folder of run `spec` (name, folder or checkpoint) and return it (default:
    <run>/export-<format>/). Raises ValueError when the format has no model of this backbone."""
    backbone, info = load_encoder(spec, runs_dir)
    cfg = info["pretrain_config"]
    target = target_for(fmt, cfg["backbone"], cfg["small_images"], cfg["image_size"],
                        getattr(backbone, "sassl_img_size", None))
    ckpt = Path(info["checkpoint"])
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    folder = Path(out) if out else run_dir / f"export-{fmt}"
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    with atomic_file(folder / "model.safetensors") as tmp:
        save_file(export_state(backbone, target), str(tmp), metadata={"format": fmt, "backbone": cfg["backbone"]})
    config = {"format": fmt, "architecture": cfg["backbone"], "small_images": cfg["small_images"],
              "build": f"{target.imports}; model = {target.code}", "feature_dim": info["dim"],
              "input_size": cfg["image_size"], "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
              "sassl": {k: cfg.get(k) for k in ("style", "p", "alpha", "beta", "layers", "embed_size", "sassl_towers")},
              "step": info["step"], "pretrain_config": cfg}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "README.md").write_text(model_card(run_dir.name, fmt, target, info, read_summary(run_dir / "eval")))
    if with_heads:
        shutil.copyfile(ckpt, folder / "checkpoint.pt")
    return folder


def push_to_hub(folder: str | Path, repo: str) -> str:
    """Upload an export folder to the Hugging Face Hub (needs a network and a token); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model"))
