"""Taking the encoder out (sassl export) and watching a run (TensorBoard, W&B offline, sassl runs, figures)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sassl.cli import main
from sassl.eval.checkpoint import load_encoder
from sassl.eval.features import EvalImages
from sassl.export import export, push_to_hub, target_for
from sassl.records import read_metrics
from sassl.training import pretrain
from sassl.views import imagenet_normalize
from tiny import tiny_cfg as _cfg


def _run(tmp_path, folder, name, **kw):
    """A finished tiny run (the trainer tests' settings, a kNN pass every epoch) under tmp_path/name."""
    pretrain(_cfg(tmp_path, folder, name=name, **({"knn_every": 1} | kw)), progress=False)
    return tmp_path / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_folder):  # noqa: F811
    """Three finished runs: a ResNet-18 with in-batch SASSL (the augmentation record on), 2 epochs of 6 steps; a
    ViT-Tiny (MoCo v3) and timm's ViT-Tiny (timm:vit_tiny_patch16_224, MoCo v3), 1 epoch."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    return {"r18": _run(root, tiny_folder, "r18", backbone="resnet18", style="batch", p=0.9, log_augment=True),
            "vit": _run(root, tiny_folder, "vit", backbone="vit_tiny", learner="mocov3", epochs=1),
            "timm-vit": _run(root, tiny_folder, "timm-vit", backbone="timm:vit_tiny_patch16_224", learner="mocov3",
                             epochs=1)}


def _real_images(folder, n=6, size=32) -> torch.Tensor:
    from sassl.data import get_dataset

    ds = get_dataset(f"imagefolder:{folder}@val")
    x = torch.stack([EvalImages(ds, list(range(n)), size)[i][0] for i in range(n)]).float().div(255)
    return imagenet_normalize(x).contiguous()


LOADER = """
import json, sys, torch
from safetensors.torch import load_file
folder, inputs, out = sys.argv[1:4]
card = open(folder + "/README.md").read()
code = card.split("```python\\n")[1].split("```")[0]   # the model card's own lines, as a user copies them
import os; os.chdir(folder)
ns = {}
exec(code, ns)
model = ns["model"].eval()
with torch.no_grad():
    feats = model(torch.load(inputs, weights_only=True))
torch.save(feats, out)
assert not [m for m in sys.modules if m == "sassl" or m.startswith("sassl.")], "sassl was imported"
"""


@pytest.mark.parametrize("run, fmt", [("r18", "torchvision"), ("r18", "timm"), ("vit", "torchvision"),
                                      ("vit", "timm"), ("timm-vit", "timm")])
def test_exported_encoder_loads_strictly_without_sassl_and_gives_the_same_features(runs, run, fmt, tmp_path,
                                                                                   tiny_folder):  # noqa: F811
    """The model card's load lines run in a fresh Python that never imports sassl: torchvision's / timm's model
    with the classifier removed takes the file with strict=True (load_state_dict's default) and its features
    on real images equal load_encoder's (relative difference < 1e-5). Seen failing on: timm's ViT names left
    as torchvision's (missing keys), the qkv rows of a ViT in another order (features differ)."""
    folder = export(str(runs[run]), tmp_path / "out", fmt)
    x = _real_images(tiny_folder)
    torch.save(x, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "-c", LOADER, str(folder), str(tmp_path / "x.pt"), str(tmp_path / "f.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = torch.load(tmp_path / "f.pt", weights_only=True)
    net, _ = load_encoder(str(runs[run]))
    with torch.no_grad():
        ours = net(x)
    assert theirs.shape == ours.shape
    assert ((theirs - ours).norm() / ours.norm()).item() < 1e-5
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == fmt and config["input_size"] == 32 and config["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert config["pretrain_config"]["name"] == run and config["sassl"]["style"] in ("batch", "none")


def test_export_card_heads_refusals_and_hub(runs, tmp_path, monkeypatch):
    """The model card reports the run's eval numbers; --with-heads copies the checkpoint; a backbone with no
    equivalent in the library is refused with the alternative named; the hub upload is one call."""
    run = runs["r18"]
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "summary.json").write_text(json.dumps([{"target": "objects", "protocol": "linear", "n": 3,
                                                            "top1_mean": 31.804, "top1_std": 1.5}]))
    folder = export("r18", tmp_path / "e", "timm", runs_dir=str(run.parent), with_heads=True)
    card = (folder / "README.md").read_text()
    assert "| objects | linear | 31.80 +- 1.50 | 3 |" in card
    assert "on `imagefolder:" in card and "12 steps" in card and "style source `batch`, p 0.9" in card
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert state["step"] == 12 and any(k.startswith("projector") or "head" in k or "target" in k for k in state["model"])
    with pytest.raises(ValueError, match="small-image stem.*use --format sassl"):
        target_for("torchvision", "resnet18", True, 32)
    for fmt in ("torchvision", "timm"):
        with pytest.raises(ValueError, match="resnet50x4.*no (torchvision|timm) or .*use --format sassl"):
            target_for(fmt, "resnet50x4", False, 224)
    with pytest.raises(ValueError, match="--format: 'onnx'"):
        target_for("onnx", "resnet18", False, 32)
    with pytest.raises(ValueError, match="timm:convnext_atto is a timm model; use --format timm"):
        target_for("torchvision", "timm:convnext_atto", False, 64)
    assert target_for("timm", "timm:convnext_atto", False, 64).code == \
        "timm.create_model('convnext_atto', pretrained=False, num_classes=0)"
    ours = target_for("sassl", "resnet50x4", False, 224)
    assert "create_backbone('resnet50x4'" in ours.code

    calls = []

    class FakeApi:
        def create_repo(self, repo, exist_ok):
            calls.append(("create", repo, exist_ok))

        def upload_folder(self, folder_path, repo_id, repo_type):
            calls.append(("upload", folder_path, repo_id, repo_type))
            return "https://huggingface.co/me/r18/commit/abc"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_to_hub(folder, "me/r18").endswith("/commit/abc")
    assert calls == [("create", "me/r18", True), ("upload", str(folder), "me/r18", "model")]


def test_sassl_format_for_the_small_image_stem(tmp_path, tiny_folder):  # noqa: F811
    """--format sassl takes any backbone: our module with the card's lines (sassl imported there)."""
    run = _run(tmp_path, tiny_folder, "small", small_images=True, max_steps=1, knn_every=0)
    folder = export(str(run), None, "sassl")
    assert folder == run / "export-sassl"
    code = (folder / "README.md").read_text().split("```python\n")[1].split("```")[0]
    ns = {}
    exec(code.replace('load_file("model.safetensors")', f'load_file("{folder}/model.safetensors")'), ns)
    net, _ = load_encoder(str(run))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ns["model"].eval()(x), net(x))


def test_tensorboard_holds_the_runs_scalars_draws_and_views(runs):
    """Read back with tensorboard's own reader: one loss per step equal to metrics.jsonl's, lr and momentum,
    the monitor's kNN, probe and RankMe (step 0's random-init ones included), img/s, histograms of the SASSL draws (alpha and beta
    within their default range 0.1-0.3), and the views grid. Seen failing on: scalars logged under the epoch
    instead of the step, the draws of unstylized images in the alpha histogram."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = runs["r18"]
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    rows = read_metrics(run / "metrics.jsonl")
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    tb_loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(tb_loss) == list(range(1, 13)) and sorted(losses) == list(range(1, 13))
    assert all(abs(tb_loss[s] - losses[s]) < 1e-6 * max(1, abs(losses[s])) for s in losses)
    for key in ("knn_top1", "probe_top1", "rankme"):  # the monitor's numbers, step 0's random-init ones included
        monitor = {r["step"]: r[key] for r in rows if key in r}
        assert {e.step: round(e.value, 2) for e in acc.Scalars(f"eval/{key}")} == monitor and 0 in monitor, key
    tags = acc.Tags()
    assert {"train/lr", "train/momentum", "speed/images_per_second"} <= set(tags["scalars"])
    assert {"sassl/alpha", "sassl/beta", "sassl/stylized"} <= set(tags["histograms"])
    for name in ("sassl/alpha", "sassl/beta"):
        h = acc.Histograms(name)[-1].histogram_value
        assert 0.1 <= h.min <= h.max <= 0.3 and h.num > 0
    stylized = acc.Histograms("sassl/stylized")[-1].histogram_value
    assert stylized.num == 6 * 8 and stylized.min == 0.0 and stylized.max == 1.0  # p 0.9: some of 48 are not
    assert acc.Histograms("sassl/alpha")[-1].histogram_value.num == stylized.sum
    img = acc.Images("views")[0]
    assert img.width == 3 * 32 + 4 * 2 and img.height == 8 * 32 + 9 * 2  # 8 rows of (SASSL crop, view 1, view 2)


def test_wandb_offline_and_tensorboard_off(tmp_path, tiny_folder, monkeypatch):  # noqa: F811
    """--wandb PROJECT with WANDB_MODE=offline (no network) writes the run under <run>/wandb/ with the scalars;
    --tensorboard false writes no event files."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _run(tmp_path, tiny_folder, "wb", max_steps=2, knn_every=0, wandb="sassl-test", tensorboard=False)
    assert not (run / "tensorboard").exists()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    record = next(offline[0].glob("run-*.wandb")).read_bytes()  # what `wandb sync` uploads later
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 2 and record.count(b"train/loss") >= 2
    assert all(json.dumps(v).encode() in record for v in losses)  # each step's loss, as W&B stores it (JSON)
    assert list((offline[0] / "files" / "media" / "images").glob("views_*.png"))


def test_sassl_runs_lists_state_steps_knn_and_linear(runs, tiny_folder, capsys):  # noqa: F811
    """`sassl runs`: one line per run folder (finished, resumable, empty), steps done of planned, the last kNN,
    the linear probe from eval/summary.csv; folders that hold no run are left out."""
    root = runs["r18"].parent
    (runs["r18"] / "eval").mkdir(exist_ok=True)
    (runs["r18"] / "eval" / "summary.json").write_text(json.dumps([
        {"target": "objects", "protocol": "knn", "n": 1, "top1_mean": 30.0, "top1_std": 0.0},
        {"target": "objects", "protocol": "linear", "n": 3, "top1_mean": 31.804, "top1_std": 1.5}]))
    cut = _run(root, tiny_folder, "cut", max_steps=3, knn_every=0)
    (root / "empty").mkdir()
    (root / "empty" / "config.json").write_text(json.dumps({"learner": "byol", "style": "pbn"}))
    (root / "notes").mkdir()
    assert main(["runs", "--runs-dir", str(root)]) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()}
    assert lines["name"] == ["name", "learner", "style", "steps", "knn", "linear", "state", "size"]
    knn = [r["knn_top1"] for r in read_metrics(runs["r18"] / "metrics.jsonl") if "knn_top1" in r][-1]
    assert lines["r18"][1:8] == ["mocov2", "batch", "12/12", f"{knn:.2f}", "31.80", "(objects)", "finished"]
    assert lines["vit"][1:4] == ["mocov3", "none", "6/6"] and "finished" in lines["vit"]
    assert lines["cut"][1:4] == ["mocov2", "none", "3/3"] and "finished" in lines["cut"]  # max_steps 3: its plan
    assert lines["empty"][1:5] == ["byol", "pbn", "0/?", "empty"] and "notes" not in lines
    assert lines["r18"][-1] in ("KB", "MB")
    (cut / "metrics.json").unlink()  # killed before its end: a checkpoint, no final metrics
    assert main(["runs", "--runs-dir", str(root)]) == 0
    assert "resumable" in [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("cut")][0]


def test_cli_export_and_every_subcommand_reaches_its_handler(runs, tmp_path, capsys):
    """`sassl export RUN` from the command line (its positional RUN must not shadow the handler), and no
    subcommand of `sassl` or `python -m sassl.bench` has an argument named like the dispatch attribute."""
    import argparse

    from sassl import cli
    from sassl.bench.__main__ import parser as bench_parser

    assert main(["export", "r18", "--runs-dir", str(runs["r18"].parent), "--out", str(tmp_path / "cli"),
                 "--format", "timm"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "cli" / "model.safetensors").is_file()
    parsers = []
    for add in cli.COMMANDS:
        ap = argparse.ArgumentParser()
        add(ap.add_subparsers())
        parsers.append(ap)
    parsers.append(bench_parser())
    for ap in parsers:
        for action in ap._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    assert "handler" not in {a.dest for a in sub._actions}, name


def test_a_hung_png_export_never_holds_up_a_run(tmp_path, monkeypatch):
    """kaleido's browser export can hang; save_figure gives it PNG_TIMEOUT_S in a process group of its own, then
    kills it (and its browser) and keeps the HTML, with a warning saying why there is no PNG. SASSL_PNG=0: no
    renderer at all."""
    import time
    import warnings

    import plotly.graph_objects as go

    from sassl.figures import save as plots

    fig = go.Figure(go.Scatter(x=[1, 2], y=[2, 1]))
    monkeypatch.setenv("SASSL_PNG", "1")
    monkeypatch.setattr(plots, "_RENDER", "import os, sys, time; open(sys.argv[1] + '.pid', 'w').write(str(os.getpid())); "
                                          "time.sleep(600)")
    monkeypatch.setattr(plots, "PNG_TIMEOUT_S", 1.0)
    monkeypatch.setattr(plots.write_png, "__defaults__", (1.0,))
    t0 = time.time()
    with pytest.warns(UserWarning, match="no PNG for curves .*TimeoutError: static export took over 1 s"):
        out = plots.save_figure(fig, tmp_path / "curves")
    assert out == [tmp_path / "curves.html"] and out[0].is_file() and not (tmp_path / "curves.png").exists()
    assert time.time() - t0 < 30
    pid = int((tmp_path / "curves.png.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    monkeypatch.setattr(plots, "_RENDER", "import sys; sys.exit('kaleido: no browser found')")
    with pytest.warns(UserWarning, match="RuntimeError: kaleido: no browser found"):
        assert plots.save_figure(fig, tmp_path / "other") == [tmp_path / "other.html"]
    monkeypatch.setenv("SASSL_PNG", "0")  # HTML only: the renderer is not started (no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.save_figure(fig, tmp_path / "third") == [tmp_path / "third.html"]


def test_augment_record_joins_each_images_draws_with_its_loss(runs):
    """--log-augment: one row per image and step, in the step's order; each step's rows average to the step's
    logged loss; alpha and beta only on stylized images, in the default range; in-batch
    style rows are rows of the micro-batch."""
    from sassl.tracking import read_augment

    rec = read_augment(runs["r18"])
    assert len(rec) == 12 * 8 and sorted(set(rec["step"].tolist())) == list(range(1, 13))
    assert all(rec["image"][rec["step"] == s].tolist() == list(range(8)) for s in range(1, 13))
    losses = {r["step"]: r["loss"] for r in read_metrics(runs["r18"] / "metrics.jsonl") if "loss" in r}
    for s, loss in losses.items():
        assert rec["loss"][rec["step"] == s].mean() == pytest.approx(loss, rel=1e-5)
    on = rec["stylized"].astype(bool)
    assert 0 < on.sum() < len(rec) and np.isnan(rec["alpha"][~on]).all() and (rec["style"][~on] == -1).all()
    assert ((rec["alpha"][on] >= 0.1) & (rec["alpha"][on] <= 0.3) & (rec["beta"][on] >= 0.1) & (rec["beta"][on] <= 0.3)).all()
    assert ((rec["style"][on] >= 0) & (rec["style"][on] < 8)).all()  # in-batch styles: a row of the batch
    assert not (runs["vit"] / "augment.bin").exists()


def test_augment_rows_and_their_resumption(tmp_path):
    """augment_rows against hand-built draws over two micro-batches (one without SASSL); a resumed run drops the
    rows logged after its checkpoint; excess loss is the loss minus its step's mean."""
    from types import SimpleNamespace

    from sassl.figures.training import augment_figure
    from sassl.tracking import augment_summary, excess_loss
    from sassl.tracking import AUGMENT, RunLog, augment_rows, read_augment

    draws = SimpleNamespace(apply=torch.tensor([True, False, True]), alpha=torch.tensor([0.1, 0.2, 0.3]),
                            beta=torch.tensor([0.25, 0.15, 0.2]), style_index=torch.tensor([2, 0, 1]))
    batch = [SimpleNamespace(crop1=torch.zeros(3, 3, 4, 4), p1=SimpleNamespace(sassl=draws)),
             SimpleNamespace(crop1=torch.zeros(2, 3, 4, 4), p1=SimpleNamespace(sassl=None))]
    rows = augment_rows(7, batch, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert rows.dtype == AUGMENT and rows["step"].tolist() == [7] * 5 and rows["image"].tolist() == [0, 1, 2, 3, 4]
    assert rows["stylized"].tolist() == [1, 0, 1, 0, 0] and rows["style"].tolist() == [2, -1, 1, -1, -1]
    assert rows["alpha"][[0, 2]].tolist() == pytest.approx([0.1, 0.3]) and np.isnan(rows["alpha"][[1, 3, 4]]).all()
    assert rows["beta"][[0, 2]].tolist() == pytest.approx([0.25, 0.2]) and rows["loss"].tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="4 per-image losses for 5 images"):
        augment_rows(7, batch, torch.ones(4))
    log = RunLog(tmp_path, {}, tensorboard=False)
    for step in (1, 2, 3):
        log.record_augment(step, batch, torch.full((5,), float(step)))
    assert len(read_augment(tmp_path)) == 15
    RunLog(tmp_path, {}, tensorboard=False, resume_step=2)
    assert read_augment(tmp_path)["step"].tolist() == [1] * 5 + [2] * 5
    rec = np.concatenate([augment_rows(1, batch, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])),
                          augment_rows(2, batch, torch.tensor([2.0, 2.0, 2.0, 2.0, 7.0]))])
    assert excess_loss(rec).tolist() == pytest.approx([-2, -1, 0, 1, 2, -1, -1, -1, -1, 4])
    # stylized images 0, 2 (steps 1 and 2): excess -2, 0, -1, -1; the others -1, 1, 2, -1, -1, 4
    summ = {(r["by"], round(r["value"], 3), r["images"]): r["excess_loss"] for r in augment_summary(rec, bins=2)}
    assert summ == pytest.approx({("stylized", 1, 4): -1.0, ("stylized", 0, 6): 4 / 6, ("alpha", 0.15, 2): -1.5,
                                  ("alpha", 0.25, 2): -0.5, ("beta", 0.213, 2): -0.5, ("beta", 0.238, 2): -1.5})
    fig = augment_figure(rec)
    assert [t.name for t in fig.data] == ["stylized, by alpha", "stylized, by beta", "by style row"]
    assert list(fig.data[2].x) == ["2", "1"] and list(fig.data[2].y) == pytest.approx([-1.5, -0.5])  # lowest first


def test_augment_trend_is_the_weighted_line_through_the_bins():
    """augment_trend against numpy's weighted polyfit (weights 1 / stderr, i.e. 1 / stderr^2 on squared
    residuals) on constructed bins with unequal errors; an unweighted line or the scatter's error would differ."""
    from sassl.tracking import augment_trend

    x = np.array([0.1125, 0.1375, 0.1625, 0.1875, 0.2125, 0.2375])
    y = np.array([-0.01, 0.004, -0.002, 0.02, 0.006, 0.03])
    se = np.array([0.002, 0.01, 0.004, 0.02, 0.003, 0.008])
    rows = [{"by": "stylized", "value": 1, "excess_loss": 5.0, "stderr": 0.1}]  # not a bin: ignored
    rows += [{"by": "beta", "value": a, "excess_loss": b, "stderr": c} for a, b, c in zip(x, y, se)]
    coef, cov = np.polyfit(x, y, 1, w=1 / se, cov="unscaled")
    slope, err = augment_trend(rows, "beta")
    assert slope == pytest.approx(0.1 * coef[0]) and err == pytest.approx(0.1 * np.sqrt(cov[0, 0]))
    assert slope != pytest.approx(0.1 * np.polyfit(x, y, 1)[0], rel=0.05)  # the unweighted line is another
    exact = [r | {"excess_loss": 0.02 + 0.3 * r["value"]} for r in rows]
    assert augment_trend(exact, "beta", per=1.0)[0] == pytest.approx(0.3)
    assert augment_trend(rows, "alpha") is None and augment_trend(rows[:3], "beta") is None  # under 3 bins
