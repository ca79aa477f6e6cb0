"""One call, many targets and protocols: `sassl evaluate ENCODER --targets ... --protocols ...`.

Writes <out>/results.csv|json (a row per target x protocol x seed/episode), <out>/summary.csv|json
(mean and std over seeds; the tidy table to compare runs by), figures/summary.html|png, and run.json
(time taken; few-shot settings skipped because a class has fewer training images than shots).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sassl import dist
from sassl.config import check_bounds
from sassl.data.loader import epoch_seed, loader_workers
from sassl.data.registry import say_skipped
from sassl.devices import resolve_device
from sassl.eval.checkpoint import load_encoder
from sassl.eval.config import EVAL_BOUNDS, EvalConfig, default_out, upgraded_eval  # noqa: F401 (re-exported)
from sassl.eval.features import cached_features, encoder_fingerprint, stream_features
from sassl.eval.fewshot import few_shot, read_fewshot_list
from sassl.eval.finetune import finetune
from sassl.eval.knn import knn_predict
from sassl.eval.linear import linear_probe, predict, scores, train_linear
from sassl.eval.report import baseline_matches, stopped_evaluation, summarize
from sassl.eval.robustness import check_heldout, embed, load_images, style_invariance, stylize_op
from sassl.eval.shape_bias import shape_bias, stylizer_render
from sassl.eval.style_probe import render_styles, stage_invariance, style_decodability
from sassl.eval.targets import load_target
from sassl.figures.evaluation import shape_bias_figure, summary_figure
from sassl.interrupt import GracefulStop
from sassl.precision import check_precision, resolve_precision, with_precision
from sassl.figures.save import save_figure
from sassl.records import git_commit, write_table
from sassl.stylizer import STYLE_KEYWORDS, make_style_op, pretrained

# protocols that stylize test images with held-out styles
ROBUSTNESS = ("style_invariance", "stylized", "style_decodability", "stage_invariance")


def _check(cfg: EvalConfig) -> None:
    bad = [p for p in cfg.protocols if p not in PROTOCOL_ROWS]
    if bad:
        raise ValueError(f"protocols: unknown {bad}; available: {', '.join(PROTOCOL_ROWS)}")
    if not cfg.targets:
        raise ValueError("targets: give at least one dataset name")
    if not cfg.seeds:
        raise ValueError("seeds: give at least one seed")
    if any(s < 1 for s in cfg.shots):
        raise ValueError(f"shots: each must be >= 1, got {list(cfg.shots)}")
    check_bounds(cfg, EVAL_BOUNDS)
    check_precision(cfg.precision)


# settings that do not change a baseline's numbers (the baseline is keyed by all the others)
BASELINE_FREE = ("encoder", "out", "device", "num_workers", "runs_dir", "baseline", "feature_cache", "batch_size")


def random_twin(info: dict) -> str:
    """The random-init encoder spec of an encoder's architecture: random:BACKBONE[:small]."""
    return f"random:{info['backbone']}" + (":small" if info["small_images"] else "")


def baseline_summary(cfg: EvalConfig, info: dict, image_size: int, progress: bool = True) -> list[dict]:
    """The summary of the same evaluation of the random-init encoder of this architecture (the bar a
    pre-trained encoder must clear), [] for a random encoder or baseline=False. Evaluated once per
    architecture and settings into <runs_dir>/baselines/ and read from there after; the decision is made once
    for all ranks."""
    if not cfg.baseline or info.get("random_init"):
        return []
    spec = random_twin(info)
    settings = {k: v for k, v in asdict(cfg).items() if k not in BASELINE_FREE} | {"encoder": spec, "image_size": image_size}
    if settings["precision"] == "fp32":  # (resolved) float32 baselines keep the key they had before --precision
        del settings["precision"]
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:12]
    folder = Path(cfg.runs_dir) / "baselines" / f"{spec.replace(':', '-')}-{key}"
    if dist.all_true(baseline_matches(folder, settings)):
        return json.loads((folder / "summary.json").read_text())
    twin = replace(cfg, encoder=spec, image_size=image_size, out=str(folder), baseline=False)
    return evaluate(twin, progress)["summary"]


def finetune_epochs(cfg: EvalConfig, n_train: int, probe_batch: int = 256, finetune_batch: int = 64) -> int:
    """cfg.finetune_epochs, or for 0 the epochs at batch 64 that make as many optimiser steps as the linear
    probe's probe_epochs at batch 256 (the paper fine-tunes with the probe's iterations and augmentation)."""
    if cfg.finetune_epochs:
        return cfg.finetune_epochs
    steps = cfg.probe_epochs * math.ceil(n_train / probe_batch)
    return max(1, round(steps / math.ceil(n_train / finetune_batch)))


def heldout_stylizer(cfg: EvalConfig, info: dict, device, held: tuple | None = None):
    """stylize(x, beta, generator) with the held-out styles (one drawn per image); `held`: heldout_styles'."""
    stylizer, bank = held or heldout_styles(cfg, info, device)
    ops = {}

    def stylize(x: torch.Tensor, beta: float, g: torch.Generator) -> torch.Tensor:
        if beta not in ops:
            ops[beta] = stylize_op(stylizer, bank, beta).to(device)
        op = ops[beta]
        return torch.cat([op(b.to(device), generator=g)[0].cpu() for b in x.split(64)])
    return stylize


def heldout_styles(cfg: EvalConfig, info: dict, device) -> tuple:
    """(stylizer, the held-out style bank), after refusing styles the encoder was trained with (by setting and
    by the source they resolved to)."""
    stylizer = pretrained(device)
    choice = make_style_op(cfg.heldout_styles, stylizer, p=1.0, progress=False)
    if choice.bank is None:
        raise ValueError(f"heldout_styles: needs a set of style images (a dataset name, a folder or a bank .pt), "
                         f"got {cfg.heldout_styles!r}")
    trained = info.get("pretrain_config", {}).get("style")
    check_heldout(cfg.heldout_styles, trained, cfg.allow_style_overlap)
    if trained and trained not in STYLE_KEYWORDS:
        check_heldout(choice.used, make_style_op(trained, stylizer, p=1.0, progress=False).used, cfg.allow_style_overlap)
    return stylizer, choice.bank


def stylized_rows(base: dict, backbone, train_feats, target, x_te, y_te, stylize, cfg: EvalConfig,
                  clf: torch.nn.Module) -> list[dict]:
    """kNN and the linear classifier `clf`, both fit on clean train features, tested on clean and on fully
    stylized (beta 1, seed 0) test images: rows 'stylized-knn' / 'stylized-linear' with the stylized top-1, the
    clean top-1 and the drop."""
    clean = embed(backbone, x_te)
    styl = embed(backbone, stylize(x_te, 1.0, torch.Generator().manual_seed(0)))
    out = []
    for name, predict_fn in (("knn", lambda f: torch.nn.functional.one_hot(
            knn_predict(train_feats, target.train_y, f, target.num_classes, cfg.knn_k).cpu(), target.num_classes).float()),
                             ("linear", lambda f: predict(clf, f))):
        c, s = scores(predict_fn(clean), y_te)["top1"], scores(predict_fn(styl), y_te)["top1"]
        out.append(base | {"protocol": f"stylized-{name}", "seed": 0, "top1": s, "top5": None, "clean_top1": c,
                           "drop": c - s, "heldout_styles": cfg.heldout_styles, "n_test": len(y_te)})
    return out


def side_features(backbone: torch.nn.Module, parts: list, cfg: EvalConfig, size: int, fingerprint: str,
                  workers: int) -> tuple[torch.Tensor, int]:
    """Cached float16 features of one side of a target (its parts concatenated) and how many parts were reused."""
    feats, reused = [], 0
    for ds, idx in parts:
        f, _, hit = cached_features(backbone, ds, idx, size, cfg.crop_fraction, fingerprint, cfg.batch_size, workers,
                                    cache=cfg.feature_cache)
        feats.append(f)
        reused += hit
    return torch.cat(feats), reused


@dataclass
class Probe:
    """What the protocols of one target see: the settings, the encoder, the target and its cached features."""

    cfg: EvalConfig
    backbone: torch.nn.Module
    info: dict
    target: object
    base: dict             # the columns every row of this target carries
    tr: torch.Tensor       # train features (float16, cached)
    te: torch.Tensor       # test features
    size: int
    workers: int
    stylize: object = None  # the held-out stylizer of the robustness protocols
    heldout: tuple | None = None  # (stylizer, held-out style bank) behind it
    held: tuple | None = None  # the bounded test images they stylize, decoded once
    clean_clf: torch.nn.Module | None = None  # the linear classifier on clean train features, fit once
    skipped: list = field(default_factory=list)  # settings a protocol could not run, with the reason

    def test_images(self) -> tuple:
        if self.held is None:
            self.held = load_images(self.target.test, self.size, self.cfg.crop_fraction, self.cfg.robust_max_images)
        return self.held

    def clean_linear(self) -> torch.nn.Module:
        """The linear classifier fit on the clean train features (the stylized and shape-bias protocols' head)."""
        if self.clean_clf is None:
            with torch.enable_grad():
                self.clean_clf = train_linear(self.tr, self.target.train_y, self.target.num_classes,
                                              self.cfg.probe_epochs, self.cfg.probe_lr)
        return self.clean_clf


def knn_rows(pr: Probe) -> list[dict]:
    """The weighted kNN vote: deterministic, one row."""
    t = pr.target
    pred = knn_predict(pr.tr, t.train_y, pr.te, t.num_classes, pr.cfg.knn_k).cpu()
    logits = torch.nn.functional.one_hot(pred, t.num_classes).float()
    return [pr.base | {"protocol": "knn", "seed": 0} | scores(logits, t.test_y) | {"top5": None}]


def linear_rows(pr: Probe) -> list[dict]:
    """The linear probe, one row per seed; with cfg.augment, fresh augmented crops streamed every epoch."""
    cfg, t, rows = pr.cfg, pr.target, []
    for seed in cfg.seeds:
        def augmented(epoch: int, seed=seed) -> torch.Tensor:
            return torch.cat([stream_features(pr.backbone, ds, idx, pr.size, cfg.batch_size, pr.workers, 1.0,
                                              augment_seed=epoch_seed(seed, epoch))[0] for ds, idx in t.train])
        r = linear_probe(pr.tr, t.train_y, pr.te, t.test_y, t.num_classes, cfg.probe_epochs, cfg.probe_lr, seed=seed,
                         augmented=augmented if cfg.augment else None)
        rows.append(pr.base | {"protocol": "linear", "seed": seed} | r)
    return rows


def fewshot_rows(pr: Probe) -> list[dict]:
    """Few-shot episodes: the published split file's when given, else seeded ones per shots and seed (a shots
    setting with too few images per class is skipped, with a warning and a row in run.json)."""
    cfg, t, rows = pr.cfg, pr.target, []
    if cfg.fewshot_list:
        names = [Path(str(ds.files[i])).name for ds, idx in t.train for i in idx]
        for shots, picks in read_fewshot_list(cfg.fewshot_list, names).items():
            eps = few_shot(pr.tr, t.train_y, pr.te, t.test_y, t.num_classes, shots, epochs=cfg.probe_epochs, picks=picks)
            rows += [pr.base | {"protocol": f"{shots}-shot", "seed": 0, "episodes_from": Path(cfg.fewshot_list).name}
                     | r for r in eps]
        return rows
    for shots in cfg.shots:
        for seed in cfg.seeds:
            try:
                eps = few_shot(pr.tr, t.train_y, pr.te, t.test_y, t.num_classes, shots, cfg.episodes, seed * 1000,
                               cfg.probe_epochs)
            except ValueError as e:  # too few images for this many shots: skip it, say so
                warnings.warn(f"target {pr.base['target']}: {e}; {shots}-shot skipped for this target")
                pr.skipped.append({"target": pr.base["target"], "protocol": f"{shots}-shot", "reason": str(e)})
                break
            rows += [pr.base | {"protocol": f"{shots}-shot", "seed": seed, "episodes_from": "seeded"} | r for r in eps]
    return rows


def finetune_rows(pr: Probe) -> list[dict]:
    """Fine-tuning of the whole network, one row per seed."""
    cfg = pr.cfg
    return [pr.base | {"protocol": "finetune", "seed": seed}
            | finetune(pr.backbone, pr.info["dim"], pr.target, pr.size, finetune_epochs(cfg, len(pr.target.train_y)),
                       cfg.finetune_lr, seed=seed, augment=cfg.augment, crop_fraction=cfg.crop_fraction,
                       num_workers=pr.workers)
            for seed in cfg.seeds]


def invariance_rows(pr: Probe) -> list[dict]:
    """Cosine of f(x) and f(stylized x) at each beta, beside a content change (rows of robustness.csv)."""
    x_te, y_te = pr.test_images()
    return [pr.base | {"protocol": "style_invariance", "heldout_styles": pr.cfg.heldout_styles} | r
            for r in style_invariance(pr.backbone, x_te, y_te, pr.stylize, pr.cfg.robust_betas)]


def stylized_target_rows(pr: Probe) -> list[dict]:
    """kNN and linear probe fit on clean features, tested on the fully stylized test images (stylized_rows)."""
    x_te, y_te = pr.test_images()
    return stylized_rows(pr.base, pr.backbone, pr.tr, pr.target, x_te, y_te, pr.stylize, pr.cfg, pr.clean_linear())


def decodability_rows(pr: Probe) -> list[dict]:
    """Style and content decodability of the features of test images stylized with cfg.decodability_styles
    held-out styles (sassl.eval.style_probe; a row of robustness.csv)."""
    x_te, y_te = pr.test_images()
    stylizer, bank = pr.heldout
    k = min(pr.cfg.decodability_styles, len(bank))
    codes = bank.embeddings[torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:k]]

    def probe(feats, y, classes):
        with torch.enable_grad():
            clf = train_linear(feats, y, classes, pr.cfg.probe_epochs, pr.cfg.probe_lr)
        return lambda f: predict(clf, f).argmax(1)
    row = style_decodability(lambda x: embed(pr.backbone, x), probe, x_te, y_te,
                             lambda x, ids: render_styles(stylizer, x, codes[ids]), k)
    return [pr.base | {"protocol": "style_decodability", "heldout_styles": pr.cfg.heldout_styles} | row]


def stage_rows(pr: Probe) -> list[dict]:
    """Cosine of clean and fully stylized test images at each backbone stage, beside a same-class content change
    (sassl.eval.style_probe; rows of robustness.csv)."""
    x_te, y_te = pr.test_images()
    stylized = pr.stylize(x_te, 1.0, torch.Generator().manual_seed(0))
    return [pr.base | {"protocol": "stage_invariance", "heldout_styles": pr.cfg.heldout_styles} | r
            for r in stage_invariance(pr.backbone, x_te, y_te, stylized)]


def shape_bias_rows(pr: Probe) -> list[dict]:
    """Cue-conflict shape bias (sassl.eval.shape_bias) of the kNN and linear heads fit on clean train features,
    on the bounded test images stylized with exemplars of other test classes (rows of shape_bias.csv)."""
    x_te, y_te = pr.test_images()
    t, cfg, clf = pr.target, pr.cfg, pr.clean_linear()
    heads = {"knn": lambda f: knn_predict(pr.tr, t.train_y, f, t.num_classes, cfg.knn_k),
             "linear": lambda f: predict(clf, f).argmax(1)}
    stylizer = pr.heldout[0] if pr.heldout else pretrained(next(pr.backbone.parameters()).device)
    render = stylizer_render(stylizer)
    return [pr.base | {"protocol": "shape_bias", "seed": 0} | r
            for r in shape_bias(lambda x: embed(pr.backbone, x), heads, x_te, y_te, render, seed=0)]


# protocol -> (its rows for one target, the table they go to)
PROTOCOL_ROWS = {"knn": (knn_rows, "results"), "linear": (linear_rows, "results"), "fewshot": (fewshot_rows, "results"),
                 "finetune": (finetune_rows, "results"), "style_invariance": (invariance_rows, "robustness"),
                 "stylized": (stylized_target_rows, "results"), "shape_bias": (shape_bias_rows, "shape_bias"),
                 "style_decodability": (decodability_rows, "robustness"), "stage_invariance": (stage_rows, "robustness")}


def target_probe(cfg: EvalConfig, name: str, backbone, info: dict, size: int, fingerprint: str, workers: int,
                 held_styles: tuple, skipped: list[dict], reuse: dict[str, int]) -> Probe:
    """Target `name` loaded, its features extracted (or read from the cache: reuse[name] counts the parts read),
    as the Probe every protocol takes."""
    target = load_target(name, max_per_split=cfg.max_per_split, train_list=cfg.train_list, merge_val=cfg.merge_val)
    skip_log = default_out(cfg) / "skipped.txt"  # unusable files listed there, said once for the target's features
    for ds, _ in target.train + target.test:
        ds.skip_log = skip_log
    said = say_skipped(skip_log, None, "")
    base = {"encoder": cfg.encoder, "target": name, "classes": target.num_classes,
            "n_train": len(target.train_y), "n_test": len(target.test_y), "split": target.meta["split"]}
    tr, hit_tr = side_features(backbone, target.train, cfg, size, fingerprint, workers)
    te, hit_te = side_features(backbone, target.test, cfg, size, fingerprint, workers)
    reuse[name] = hit_tr + hit_te
    if dist.rank() == 0:
        say_skipped(skip_log, said, f"sassl evaluate, target {name}: its features")
    return Probe(cfg, backbone, info, target, base, tr, te, size, workers, *held_styles, skipped=skipped)


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run every protocol on every target; returns {'rows', 'summary', 'out', 'encoder'}. Under torchrun every
    rank extracts its share of the features (gathered, in order) and computes the same results; rank 0 writes."""
    _check(cfg)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    backbone, info = load_encoder(cfg.encoder, cfg.runs_dir, device)  # fails before any data is loaded
    size = cfg.image_size or info.get("pretrain_config", {}).get("image_size", 64)
    # features computed under another precision are other features: their cache key says which
    fingerprint = encoder_fingerprint(backbone) + ("" if precision == "fp32" else f"-{precision}")
    backbone = with_precision(backbone, precision)
    workers = loader_workers(cfg.num_workers)
    out = default_out(cfg)
    writer = dist.rank() == 0
    if writer:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg) | {"resolved": {
            "out": str(out), "image_size": size, "device": str(device), "precision": precision,
            "git_commit": git_commit(),
            "world_size": dist.world_size(), "encoder_sha256": fingerprint,
            "encoder": {k: v for k, v in info.items() if k != "pretrain_config"}}}, indent=1))
    tables: dict[str, list[dict]] = {"results": [], "robustness": [], "shape_bias": []}
    skipped: list[dict] = []
    reuse: dict[str, int] = {}
    held = heldout_styles(cfg, info, device) if set(cfg.protocols) & set(ROBUSTNESS) else None
    stylize = heldout_stylizer(cfg, info, device, held) if held else None
    t_start = time.time()
    bar = tqdm(cfg.targets, desc="evaluating", disable=not progress or not writer)
    done: list[str] = []
    with GracefulStop(f"sassl evaluate {cfg.encoder}", "protocol") as stop:
        for name in bar:
            bar.set_postfix(target=name, step="features")
            probe = target_probe(cfg, name, backbone, info, size, fingerprint, workers, (stylize, held), skipped, reuse)
            for protocol in cfg.protocols:
                bar.set_postfix(target=name, protocol=protocol)
                rows_of, table = PROTOCOL_ROWS[protocol]
                tables[table] += rows_of(probe)
                done.append(f"{name}/{protocol}")
                if stop.agreed(device):
                    raise stopped_evaluation(cfg, out, tables, done, stop.signum, writer)
    rows, robust_rows = tables["results"], tables["robustness"]
    summary = summarize(rows)
    baseline = baseline_summary(replace(cfg, precision=precision), info, size, progress)
    if writer:
        if baseline:
            write_table(baseline, out / "baseline_summary")
        if robust_rows:
            write_table(robust_rows, out / "robustness")
        if tables["shape_bias"]:
            write_table(tables["shape_bias"], out / "shape_bias")
            save_figure(shape_bias_figure(tables["shape_bias"], f"{cfg.encoder}: cue-conflict shape bias"),
                        out / "figures" / "shape_bias")
        write_table(rows, out / "results")
        write_table(summary, out / "summary")
        save_figure(summary_figure(summary, f"{cfg.encoder}: top-1 by target and protocol"), out / "figures" / "summary")
        (out / "run.json").write_text(json.dumps({"seconds": round(time.time() - t_start, 1), "skipped": skipped,
                                                  "feature_parts_reused": reuse}, indent=1))
    dist.barrier()
    return {"rows": rows, "summary": summary, "out": out, "encoder": info, "skipped": skipped, "reused": reuse,
            "robustness": robust_rows, "shape_bias": tables["shape_bias"], "baseline": baseline}
