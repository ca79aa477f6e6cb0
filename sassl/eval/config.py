"""The settings of `sassl evaluate` (EvalConfig: the CLI's flags, evaluate.ipynb's parameters, a study file's
[evaluate] table), their bounds, where an evaluation writes, and older records in today's keys."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sassl.config import setting


@dataclass
class EvalConfig:
    """Flat evaluation settings (evaluate.ipynb's parameters cell has the same names)."""

    encoder: str = setting("default", "run name / folder / checkpoint, or random:resnet18 for a baseline")
    targets: tuple = setting(("objects", "objects@test_shift", "textures", "elpv"), "dataset names, name@split or "
                             "imagefolder:PATH")
    protocols: tuple = setting(("knn", "linear", "fewshot"), "any of knn, linear, fewshot, finetune, style_invariance, "
                               "stylized, shape_bias, style_decodability, stage_invariance")
    seeds: tuple = setting((0, 1, 2), "probe / few-shot seeds (mean and std over them)")
    image_size: int = setting(0, "0: the pre-training crop size")
    knn_k: int = setting(20, "neighbours of the weighted kNN vote")
    probe_epochs: int = setting(100, "linear probe (and few-shot classifier) epochs")
    probe_lr: float = setting(0.1, "linear probe learning rate (SGD, Nesterov 0.9, cosine, no weight decay)")
    augment: bool = setting(False, "augmented linear probe / fine-tune: random crops + flips streamed each epoch "
                            "(large targets)")
    shots: tuple = setting((1, 10), "few-shot settings: labelled images per class")
    episodes: int = setting(5, "few-shot episodes per seed")
    finetune_epochs: int = setting(0, "fine-tuning epochs (whole network, batch 64); 0: as many steps as the linear "
                                   "probe takes (probe_epochs at batch 256)")
    finetune_lr: float = setting(0.01, "fine-tuning learning rate")
    max_per_split: int = setting(0, ">0: a seeded subset of each split (quick looks)")
    crop_fraction: float = setting(0.875, "preprocessing: shorter side resized to image_size / crop_fraction, centre "
                                   "crop (the paper: 256 -> 224)")
    merge_val: bool = setting(True, "a target with train/, val/ and test/: the final probe trains on train + val "
                              "(false: train only, for model selection)")
    train_list: str = setting("", "file of train image names, one per line (ImageNet's 1% / 10% lists): the train side "
                              "is cut to them")
    fewshot_list: str = setting("", "few-shot split file, lines 'SHOTS EPISODE IMAGE_NAME': its episodes replace the "
                                "seeded ones (and `shots`)")
    feature_cache: bool = setting(True, "reuse features cached on disk (float16, keyed by the encoder's weights and "
                                  "the preprocessing)")
    batch_size: int = setting(256, "images per forward pass when extracting features")
    heldout_styles: str = setting("textures", "style_invariance / stylized / style_decodability / stage_invariance: "
                                  "styles the encoder never saw (a dataset name, a folder or a bank .pt)")
    allow_style_overlap: bool = setting(False, "let heldout_styles be the encoder's own training styles (refused "
                                        "otherwise)")
    robust_betas: tuple = setting((1.0, 0.5, 0.25), "style_invariance: pixel blends of the stylized image (1: fully "
                                  "stylized)")
    robust_max_images: int = setting(500, "style_invariance / stylized / shape_bias / style_decodability / "
                                     "stage_invariance: at most this many test images per target (seeded; 0: all)")
    decodability_styles: int = setting(8, "style_decodability: held-out styles the probe tells apart (at most the "
                                       "bank's size)")
    num_workers: int = setting(-1, "DataLoader workers per process; -1: this node's cores per process, less one")
    device: str = setting("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    precision: str = setting("fp32", "fp32, bf16, fp16 or auto: autocast for the encoder's forward passes (features, "
                             "fine-tuning, the robustness protocols); probes, kNN and losses stay float32. auto: bf16 on "
                             "CUDA from compute capability 8.0, fp16 below, fp32 on the CPU (as sassl pretrain); fp32, "
                             "the default, keeps numbers comparable across machines and with earlier evaluations")
    runs_dir: str = setting("runs", "the runs root that holds the encoder's run folder")
    out: str = setting("", "empty: runs/<run>/eval (or runs/eval-<encoder>)")
    baseline: bool = setting(True, "also evaluate the random-init encoder of the same architecture (once: cached under "
                             "runs/baselines/) and show it beside")


def upgraded_eval(values: dict) -> dict:
    """An evaluation config of an older run (its eval/config.json, a study record's) in today's keys: precision,
    added since, as fp32 (what evaluation ran in before it)."""
    return {"precision": "fp32"} | values


def default_out(cfg: EvalConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    run = Path(cfg.runs_dir) / cfg.encoder
    if (run / "checkpoints").is_dir():
        return run / "eval"
    return Path(cfg.runs_dir) / ("eval-" + cfg.encoder.replace(":", "-").replace("/", "_").removesuffix(".pt"))


EVAL_BOUNDS = {"image_size": ">=0", "knn_k": ">=1", "probe_epochs": ">=1", "probe_lr": ">0", "episodes": ">=1",
               "finetune_epochs": ">=0", "finetune_lr": ">0", "max_per_split": ">=0", "crop_fraction": "(0,1]",
               "batch_size": ">=1", "robust_max_images": ">=1", "decodability_styles": ">=2", "num_workers": ">=-1"}
