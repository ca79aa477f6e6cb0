"""Evaluators: kNN, linear probe, fine-tune, few-shot, transfer table, checkpoint loading, style space."""
import csv
import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from sassl.eval.checkpoint import load_encoder
from sassl.eval.fewshot import few_shot, sample_shots
from sassl.eval.finetune import finetune
from sassl.data.registry import Dataset
from sassl.eval.features import EvalImages, cached_features, stream_features
from sassl.eval.knn import knn_accuracy, knn_predict
from sassl.eval.linear import linear_probe, topk_accuracy, train_linear
from sassl.eval.targets import Target, load_target, stratified_split
from sassl.eval.evaluate import EvalConfig, baseline_summary, evaluate, summarize
from sassl.eval.report import eval_report
from sassl.eval.tsne import frechet_distance, knn_overlap, overlap_matrices, tsne
from reference import naive_finetune


def _blobs(n_per=40, classes=4, dim=16, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


class TinyNet(nn.Module):
    """A small conv backbone: (N, 3, H, W) -> (N, 8)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).relu().mean((2, 3))


def _bright_dark(n=32, size=16, seed=0):
    """Class 1 images are bright, class 0 dark: separable by any sensible encoder."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.25 + 0.5 * y[:, None, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return x, y


def _bright_dark_target(n=32, size=16) -> Target:
    """_bright_dark as an evaluation target (uint8 images held in memory; train and test the same images)."""
    x, y = _bright_dark(n, size)
    ds = Dataset("bright-dark", y.tolist(), ["dark", "bright"], images=(x * 255).round().to(torch.uint8))
    return Target("bright-dark", ds.classes, [(ds, list(range(n)))], [(ds, list(range(n)))], y, y, {"split": "same"})


# ----------------------------------------------------------------------------- kNN, linear, fine-tune

def test_knn_identical_train_test_is_perfect():
    x, y = _blobs(spread=1.0)
    assert knn_accuracy(x, y, x, y, 4, k=1) == 1.0


def test_knn_held_out_separable_blobs_is_perfect():
    """Blob centres 14-21 apart, noise norm ~1.2: every held-out point's neighbours share its class, so 100%."""
    x, y = _blobs(n_per=80)
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], 4, k=20) == 1.0


def test_knn_random_labels_is_chance():
    """iid uniform labels over 4 classes: accuracy ~ Binomial(400, 1/4) / 400, so within 4 sd (0.087) of 0.25."""
    x, _ = _blobs(n_per=200)
    y = torch.randint(0, 4, (len(x),), generator=torch.Generator().manual_seed(1))
    acc = knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], 4, k=20)
    assert abs(acc - 0.25) <= 4 * (0.25 * 0.75 / 400) ** 0.5


def test_topk_against_naive():
    logits, labels = torch.randn(50, 12), torch.randint(0, 12, (50,))
    for k in (1, 5):
        naive = sum(int(labels[i] in sorted(range(12), key=lambda c: -logits[i, c])[:k]) for i in range(50)) / 50
        assert topk_accuracy(logits, labels, k) == pytest.approx(100 * naive)


def test_linear_probe_separable_features_reach_100():
    x, y = _blobs()
    xt, yt = _blobs(seed=0)
    clf = train_linear(x, y, 4, epochs=30, seed=0)
    assert topk_accuracy(clf(xt), yt) == 100.0


def test_linear_probe_random_labels_stay_near_chance():
    x, _ = _blobs(n_per=100, classes=4, spread=2.0)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (len(x),), generator=g)
    perm = torch.randperm(len(x), generator=g)
    tr, te = perm[:300], perm[300:]
    acc = topk_accuracy(train_linear(x[tr], y[tr], 4, epochs=30)(x[te]), y[te])
    assert 10 < acc < 45  # chance 25 %


def test_linear_probe_seeded_and_augmented_mode():
    torch.manual_seed(0)
    net = TinyNet().eval()
    t = _bright_dark_target(48)
    ds, idx = t.train[0]
    f, y = stream_features(net, ds, idx, 16, num_workers=0)
    assert torch.equal(y, t.train_y)
    a = linear_probe(f.half(), y, f.half(), y, 2, epochs=20, seed=3)
    b = linear_probe(f.half(), y, f.half(), y, 2, epochs=20, seed=3)
    assert a == b and a["top1"] > 90 and a["top5"] is None
    epochs_seen = []

    def augmented(epoch):  # fresh crops and flips each epoch, streamed through the backbone
        epochs_seen.append(epoch)
        return stream_features(net, ds, idx, 16, num_workers=0, augment_seed=epoch)[0]
    c = linear_probe(f, y, f, y, 2, epochs=5, seed=3, augmented=augmented)
    assert c["top1"] > 80 and epochs_seen == list(range(5))


def test_eval_images_centre_crop_and_seeded_augmentation():
    """The paper's preprocessing on a 40x20 image: crop_fraction 0.5 keeps the centre 10x10 square (shorter
    side 20 resized to size / 0.5, centre size x size); augmented crops are seeded per position and differ."""
    img = torch.zeros(1, 3, 20, 40, dtype=torch.uint8)
    img[:, :, 5:15, 15:25] = 255  # the centre 10 x 10 is white, the rest black
    ds = Dataset("c", [0], ["a"], images=img)
    x, _ = EvalImages(ds, [0], 8, crop_fraction=0.5)[0]
    assert x.shape == (3, 8, 8) and x[:, 1:-1, 1:-1].eq(255).all() and x.min() > 200  # the filter reaches 1 px out
    whole, _ = EvalImages(ds, [0], 8, crop_fraction=1.0)[0]  # the 20 x 20 centre square: white in its middle
    assert whole[:, 3:5, 3:5].eq(255).all() and whole[:, 0, 0].eq(0).all()
    aug = EvalImages(ds, [0, 0, 0], 8, augment_seed=4)
    a = [aug[k][0] for k in range(3)]
    assert torch.equal(a[0], EvalImages(ds, [0, 0, 0], 8, augment_seed=4)[0][0])
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[1], a[2])
    shifted = EvalImages(ds, [0], 8, augment_seed=4, positions=[2])  # item 0 drawn as position 2
    assert torch.equal(shifted[0][0], a[2])
    with pytest.raises(ValueError, match="crop_fraction"):
        EvalImages(ds, [0], 8, crop_fraction=1.5)


def test_knn_chunked_equals_one_block():
    g = torch.Generator().manual_seed(0)
    tr, te, y = torch.randn(300, 16, generator=g), torch.randn(50, 16, generator=g), torch.randint(0, 5, (300,), generator=g)
    one = knn_predict(tr, y, te, 5, k=7, chunk=1024, train_chunk=10**6)
    assert torch.equal(knn_predict(tr, y, te, 5, k=7, chunk=8, train_chunk=37), one)
    assert torch.equal(knn_predict(tr.half(), y, te.half(), 5, k=7, train_chunk=64), knn_predict(tr.half().float(), y, te.half().float(), 5, k=7))


def test_feature_cache_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("SASSL_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = TinyNet().eval()
    ds, idx = _bright_dark_target(12).train[0]
    f1, y1, hit1 = cached_features(net, ds, idx, 16, num_workers=0)
    f2, y2, hit2 = cached_features(net, ds, idx, 16, num_workers=0)
    assert (hit1, hit2) == (False, True) and f1.dtype == torch.float16 and torch.equal(f1, f2) and torch.equal(y1, y2)
    assert len(list((tmp_path / "features").iterdir())) == 1
    assert not cached_features(net, ds, idx, 16, crop_fraction=0.875, num_workers=0)[2]  # other preprocessing
    assert not cached_features(net, ds, idx[:6], 16, num_workers=0)[2]                   # other images
    with torch.no_grad():
        net.conv.weight.add_(0.01)  # a changed checkpoint never reuses
    f3, _, hit3 = cached_features(net, ds, idx, 16, num_workers=0)
    assert not hit3 and not torch.equal(f3, f1)


def test_finetune_learns_and_leaves_backbone_untouched():
    torch.manual_seed(0)
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    t = _bright_dark_target(64)
    r = finetune(net, 8, t, 16, epochs=15, lr=0.05, batch_size=16, seed=0, num_workers=0)
    assert r["top1"] > 90
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    one = Target("one", t.classes, [(t.train[0][0], [0])], t.test, t.train_y[:1], t.test_y, {})
    with pytest.raises(ValueError, match="at least 2"):
        finetune(net, 8, one, 16)


# ----------------------------------------------------------------------------- few-shot

def test_few_shot_episodes_seeded_with_clear_errors():
    x, y = _blobs(n_per=12)
    idx = sample_shots(y, 3, seed=5)
    assert len(idx) == 12 and torch.bincount(y[idx]).tolist() == [3, 3, 3, 3]
    assert torch.equal(idx, sample_shots(y, 3, seed=5)) and not torch.equal(idx, sample_shots(y, 3, seed=6))
    eps = few_shot(x, y, x, y, 4, shots=1, episodes=3, seed=0, epochs=20)
    assert len(eps) == 3 and min(e["top1"] for e in eps) > 95  # tight blobs: one shot suffices
    with pytest.raises(ValueError, match="13 shots asked but class 0 has only 12"):
        sample_shots(y, 13, seed=0)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        sample_shots(y, 0, seed=0)


# ----------------------------------------------------------------------------- targets, checkpoints

def test_stratified_split_disjoint_with_every_class_both_sides():
    labels = [0] * 5 + [1] * 2 + [2] * 1 + [-1] * 3 + [3] * 10
    tr, te = stratified_split(labels, 0.5, seed=0)
    assert not set(tr) & set(te)
    assert {labels[i] for i in tr} == {labels[i] for i in te} == {0, 1, 3}  # class 2 has a single image
    assert stratified_split(labels, 0.5, seed=0) == (tr, te)


def test_targets_bundled_and_bad_inputs(tmp_path):
    t = load_target("objects@test_shift", max_per_split=40)
    assert len(t.train_y) == 40 == sum(len(i) for _, i in t.train) and len(t.test_y) == 40 and t.num_classes == 9
    assert "test_shift" in t.meta["split"]
    tex = load_target("textures")
    assert "stratified" in tex.meta["split"] and (tex.train_y >= 0).all()
    with pytest.raises(ValueError, match="no labels"):
        load_target("photos")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    from PIL import Image
    for i in range(4):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(one / f"{i}.png")
    with pytest.raises(ValueError, match="only one class"):
        load_target(f"imagefolder:{tmp_path / 'one'}")
    with pytest.raises((ValueError, FileNotFoundError)):
        load_target(f"imagefolder:{tmp_path / 'missing'}")


def _checkpoint(tmp_path, backbone="resnet18"):
    from sassl.learners import create_learner
    from sassl.training import PretrainConfig

    cfg = PretrainConfig(backbone=backbone, proj_hidden=32, proj_dim=16)
    torch.manual_seed(0)
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, proj_hidden=32, proj_dim=16, pred_hidden=32)
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    path = tmp_path / "runs" / "r" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": json.dumps(d), "step": 7}, path)
    return path, model


def test_load_encoder_strict(tmp_path):
    path, model = _checkpoint(tmp_path)
    net, info = load_encoder("r", runs_dir=str(tmp_path / "runs"))
    assert info["step"] == 7 and not info["random_init"] and info["dim"] == 512
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(FileNotFoundError, match="random:BACKBONE"):
        load_encoder("nope", runs_dir=str(tmp_path / "runs"))
    # a checkpoint whose config names another architecture than its weights
    state = torch.load(path, weights_only=True)
    cfg = json.loads(state["config"]) | {"backbone": "resnet50"}
    torch.save(state | {"config": json.dumps(cfg)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not (match|fit) resnet50"):
        load_encoder(str(tmp_path / "bad.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_encoder(str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match="unknown backbone"):
        load_encoder("random:vgg")


# ----------------------------------------------------------------------------- transfer table

def test_evaluate_writes_tidy_tables(tmp_path):
    path, _ = _checkpoint(tmp_path)
    cfg = EvalConfig(encoder="r", runs_dir=str(tmp_path / "runs"), targets=("objects",),
                     protocols=("knn", "linear", "fewshot", "finetune"), seeds=(0, 1), image_size=32, shots=(1, 2),
                     episodes=2, probe_epochs=10, finetune_epochs=1, max_per_split=90, device="cpu")
    res = evaluate(cfg, progress=False)
    out = tmp_path / "runs" / "r" / "eval"
    assert res["out"] == out
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert list(summary[0]) == ["target", "protocol", "n", "top1_mean", "top1_std", "top5_mean", "top5_std"]
    got = {(r["target"], r["protocol"]): int(r["n"]) for r in summary}
    assert got == {(t, p): n for t in ("objects",)
                   for p, n in (("knn", 1), ("linear", 2), ("1-shot", 4), ("2-shot", 4), ("finetune", 2))}
    rows = json.loads((out / "results.json").read_text())
    # known answers: the kNN row is 100 x knn_accuracy recomputed outside evaluate(), each summary mean its rows' mean
    net, _ = load_encoder("r", runs_dir=str(tmp_path / "runs"))
    t = load_target("objects", max_per_split=90)
    tr = torch.cat([stream_features(net, ds, i, 32, crop_fraction=0.875, num_workers=0)[0] for ds, i in t.train])
    te = torch.cat([stream_features(net, ds, i, 32, crop_fraction=0.875, num_workers=0)[0] for ds, i in t.test])
    tr, te = tr.half(), te.half()  # what the cache holds
    knn = next(r for r in rows if r["protocol"] == "knn")
    assert knn["top1"] == pytest.approx(100 * knn_accuracy(tr, t.train_y, te, t.test_y, t.num_classes, k=cfg.knn_k))
    for s in summary:
        v = [r["top1"] for r in rows if (r["target"], r["protocol"]) == (s["target"], s["protocol"])]
        assert float(s["top1_mean"]) == pytest.approx(float(np.mean(v)), abs=1e-3)
    assert (out / "figures" / "summary.html").exists() and json.loads((out / "config.json").read_text())["resolved"]
    # the random-init baseline of the same architecture, evaluated with the same settings, once (cached)
    base = json.loads((out / "baseline_summary.json").read_text())
    alone = evaluate(replace(cfg, encoder="random:resnet18", out=str(tmp_path / "alone"), baseline=False),
                     progress=False)["summary"]
    assert base == alone == res["baseline"]
    cached = list((tmp_path / "runs" / "baselines").iterdir())
    assert len(cached) == 1 and re.fullmatch(r"random-resnet18-[0-9a-f]{12}", cached[0].name)
    again = baseline_summary(cfg, res["encoder"], 32)
    assert again == base  # read back, not evaluated again:
    (cached[0] / "summary.json").write_text(json.dumps([dict(b, top1_mean=1.0) for b in base]))
    assert {b["top1_mean"] for b in baseline_summary(cfg, res["encoder"], 32)} == {1.0}
    report = eval_report(out).splitlines()
    knn_line = next(ln for ln in report if " knn " in ln)
    ours, theirs = next(r for r in summary if r["protocol"] == "knn"), next(b for b in base if b["protocol"] == "knn")
    gain = float(ours["top1_mean"]) - theirs["top1_mean"]
    assert f"{float(ours['top1_mean']):6.2f}" in knn_line and f"{theirs['top1_mean']:6.2f}" in knn_line
    assert knn_line.split()[-1] == f"{gain:+.2f}" and "summary.csv" in report[-1]
    cfg = replace(cfg, baseline=False)
    with pytest.raises(ValueError, match="protocols: unknown"):
        evaluate(EvalConfig(encoder="r", runs_dir=str(tmp_path / "runs"), protocols=("svm",)))
    # textures has classes of 1-2 labelled images: more shots than images is skipped with a warning, and said
    with pytest.warns(UserWarning, match="target textures: few-shot: 2 shots asked"):
        res = evaluate(cfg.__class__(**{**asdict(cfg), "targets": ("textures",), "protocols": ("fewshot",)}))
    assert [r["protocol"] for r in res["summary"]] == ["1-shot"] and res["skipped"][0]["protocol"] == "2-shot"
    with pytest.raises(FileNotFoundError):
        evaluate(EvalConfig(encoder="missing-run", runs_dir=str(tmp_path / "runs")))


def test_summarize_mean_std_against_naive():
    rows = [{"target": "a", "protocol": "linear", "top1": v, "top5": None} for v in (50.0, 60.0, 70.0)]
    (s,) = summarize(rows)
    assert s["top1_mean"] == 60.0 and s["top1_std"] == pytest.approx(float(np.std([50, 60, 70], ddof=1)), abs=1e-3)
    assert s["top5_mean"] is None


def test_cli_evaluate_random_baseline(tmp_path, capsys):
    from sassl.cli import main

    rc = main(["evaluate", "random:resnet18", "--targets", "objects", "--protocols", "knn", "linear",
               "--seeds", "0", "--image-size", "32", "--max-per-split", "45", "--probe-epochs", "5",
               "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert rc == 0 and "objects" in capsys.readouterr().out
    assert (tmp_path / "ev" / "summary.csv").exists()
    assert main(["evaluate", "random:resnet18", "--protocols", "svm", "--out", str(tmp_path / "x")]) == 2
    assert "protocols: unknown" in capsys.readouterr().err


# ----------------------------------------------------------------------------- style space

def test_frechet_against_diagonal_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(1, 1, (4000, 3)) * [3.0, 1.0, 0.5] + [1.0, -2.0, 0.0]
    sa, sb = a.var(0, ddof=1), b.var(0, ddof=1)
    naive = ((a.mean(0) - b.mean(0)) ** 2).sum() + ((np.sqrt(sa) - np.sqrt(sb)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(naive, rel=0.02)  # sample covariances are near-diagonal
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_knn_overlap_mixed_vs_separated():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (200, 5)), rng.normal(0, 1, (150, 5))
    assert 0.85 < knn_overlap(a, b) < 1.15
    assert knn_overlap(a, b + 50) == 0.0


def test_rank_sources_orders_by_closeness_to_the_target():
    """Style sources ranked by the Fréchet distance of their embeddings to the target's: a second sample of the
    target's own distribution first, a slightly shifted one next, a far one last; every number is the
    pairwise measure between that source and the target."""
    from sassl.eval.tsne import rank_sources

    rng = np.random.default_rng(0)
    sets = {"far": rng.normal(3, 1, (80, 4)), "target": rng.normal(0, 1, (120, 4)),
            "near": rng.normal(0.4, 1, (90, 4)), "same": rng.normal(0, 1, (100, 4))}
    emb = np.concatenate(list(sets.values()))
    labels = np.array([n for n, e in sets.items() for _ in e])
    rows = rank_sources(emb, labels, "target", k=5)
    assert [r["source"] for r in rows] == ["same", "near", "far"] and [r["rank"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["frechet"] == pytest.approx(frechet_distance(sets[r["source"]], sets["target"]))
        assert r["knn_overlap"] == pytest.approx(knn_overlap(sets[r["source"]], sets["target"], 5))
        assert r["images"] == len(sets[r["source"]])
    assert rows[0]["knn_overlap"] > 0.8 > rows[2]["knn_overlap"]
    with pytest.raises(ValueError, match="target 'nope' has no embeddings"):
        rank_sources(emb, labels, "nope")
    with pytest.raises(ValueError, match="at least one style source"):
        rank_sources(sets["target"], np.array(["target"] * 120), "target")


def test_style_bank_match_command(tmp_path, capsys):
    """`sassl style-bank match TARGET SOURCE...` embeds each set (a target's NAME@SPLIT: that split), writes the
    ranked table, the t-SNE figure and its config, and prints the ranking."""
    from sassl.cli import main

    out = tmp_path / "match"
    assert main(["style-bank", "match", "objects@test_shift", "textures", "opencv-art", "--per-dataset", "5",
                 "--iterations", "250", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "match.csv")))
    assert sorted(r["source"] for r in rows) == ["opencv-art", "textures"] and [r["rank"] for r in rows] == ["1", "2"]
    assert float(rows[0]["frechet"]) <= float(rows[1]["frechet"])
    assert (out / "figures" / "tsne.html").is_file() and json.loads((out / "config.json").read_text())["points"] == 14
    printed = capsys.readouterr().out
    assert "closeness to objects@test_shift" in printed and printed.index(rows[0]["source"]) < printed.index(rows[1]["source"])


def test_tsne_and_overlap_matrix_on_real_styles():
    from sassl.eval.tsne import style_embeddings
    from sassl.figures.style_space import tsne_figure

    emb, labels, names = style_embeddings(["paintings", "textures"], per_dataset=12, image_size=64, progress=False)
    assert emb.shape == (24, 100) and set(labels) == {"paintings", "textures"} and len(names) == 24
    xy = tsne(emb, perplexity=5, iterations=250, seed=0)
    assert xy.shape == (24, 2) and np.allclose(xy, tsne(emb, perplexity=5, iterations=250, seed=0))
    m = overlap_matrices(emb, labels, k=3)
    fd = np.array(m["frechet"])
    assert fd.shape == (2, 2) and np.allclose(fd, fd.T, rtol=1e-3) and fd[0, 1] > 0
    fig = tsne_figure(emb, labels, names, perplexity=5, iterations=250)
    assert fig.data[0].hovertext is not None and len(fig.data) == 2


def test_target_with_train_val_test_and_a_train_list(tmp_path, photos):
    """train/ + val/ + test/: the final probe trains on train + val (merge_val=False keeps val out); a list
    file (ImageNet's 1% format: one file name per line) cuts the train side to exactly the listed images, and
    a listed image that is not there is a clear error."""
    from conftest import photo_crops_folder

    root = photo_crops_folder(tmp_path / "d", photos, {"train": (6, 0), "val": (2, 5), "test": (3, 9)}, (40, 32),
                              class_name="n{:08d}", file_name="{}.JPEG", quality=90)
    for p in list(root.rglob("*.JPEG")):  # ImageNet-style unique names: <class>_<i>.JPEG
        p.rename(p.with_name(f"{p.parent.name}_{p.name}"))
    t = load_target(f"imagefolder:{root}")
    assert [len(i) for _, i in t.train] == [18, 6] and len(t.test_y) == 9 and t.meta["split"] == "train + val vs test"
    assert [len(i) for _, i in load_target(f"imagefolder:{root}", merge_val=False).train] == [18]
    listed = ["n00000000_0.JPEG", "n00000001_5.JPEG", "n00000002_1.JPEG"]  # two train images, one val image
    (tmp_path / "1percent.txt").write_text("# a comment\n" + "\n".join(listed[:2]) + "\n\nn00000002/" + listed[2] + "\n")
    cut = load_target(f"imagefolder:{root}", train_list=str(tmp_path / "1percent.txt"))
    got = sorted(Path(str(ds.files[i])).name for ds, idx in cut.train for i in idx)
    assert got == sorted(listed) and len(cut.train_y) == 3 and "1percent.txt" in cut.meta["split"]
    (tmp_path / "bad.txt").write_text("n00000000_0.JPEG\nn09999999_1.JPEG\n")
    with pytest.raises(ValueError, match=r"1 of 2 listed images are not in the train split \(first: n09999999_1.JPEG\)"):
        load_target(f"imagefolder:{root}", train_list=str(tmp_path / "bad.txt"))
    with pytest.raises(FileNotFoundError, match="no such list file"):
        load_target(f"imagefolder:{root}", train_list=str(tmp_path / "none.txt"))
    # a few-shot split file (SHOTS EPISODE IMAGE_NAME) gives exactly the listed training sets, in episode order
    from sassl.eval.fewshot import read_fewshot_list

    names = [Path(str(ds.files[i])).name for ds, idx in t.train for i in idx]
    split = tmp_path / "fewshot.txt"
    split.write_text("1 0 n00000000_0.JPEG\n1 0 n00000001_1.JPEG\n1 0 n00000002_2.JPEG\n"
                     "1 1 n00000000_3.JPEG\n1 1 n00000001_4.JPEG\n1 1 n00000002_0.JPEG\n2 0 n00000000_5.JPEG\n")
    picks = read_fewshot_list(split, names)
    assert sorted(picks) == [1, 2] and len(picks[1]) == 2
    assert [names[k] for k in picks[1][1].tolist()] == ["n00000000_3.JPEG", "n00000001_4.JPEG", "n00000002_0.JPEG"]
    (tmp_path / "bad-shot.txt").write_text("1 0 n00000000_0.JPEG\n1 0 nope.JPEG\n")
    with pytest.raises(ValueError, match=r"bad-shot.txt:2: nope.JPEG is not in the target's train side"):
        read_fewshot_list(tmp_path / "bad-shot.txt", names)
    res = evaluate(EvalConfig(encoder="random:resnet18", targets=(f"imagefolder:{root}",), protocols=("fewshot",),
                              fewshot_list=str(split), image_size=32, probe_epochs=3, num_workers=0, device="cpu",
                              out=str(tmp_path / "fs")), progress=False)
    assert [(r["protocol"], r["episode"], r["episodes_from"]) for r in res["rows"]] == [
        ("1-shot", 0, "fewshot.txt"), ("1-shot", 1, "fewshot.txt"), ("2-shot", 0, "fewshot.txt")]


def test_finetune_defaults_to_the_probe_iterations():
    from sassl.eval.evaluate import finetune_epochs

    cfg = EvalConfig(probe_epochs=100)
    assert finetune_epochs(cfg, 2364) == 27  # 100 epochs x 10 steps at batch 256 = 1,000 steps; 37 steps per epoch at 64
    assert finetune_epochs(EvalConfig(probe_epochs=100, finetune_epochs=3), 2364) == 3
    assert finetune_epochs(EvalConfig(probe_epochs=1), 10) == 1


def test_finetune_against_a_hand_written_one(monkeypatch):
    """train_finetune at its defaults (20 epochs, lr 0.01, batch 64 of 70 images, seed 0) and at other settings
    (augmented crops, several batches per epoch) gives the hand-written fine-tuning's network: the same
    outputs on the test images; finetune() passes its settings on. Seen failing on (mutation survivors):
    weight decay, plain momentum, the schedule over n / batch + 1 steps, the remainder batch kept, an
    unseeded permutation, the head drawn before seeding, augmentation seeds off by one epoch, lr default 0.02."""
    from sassl.eval import finetune as ft
    from sassl.eval.finetune import train_finetune
    from sassl.views import imagenet_normalize

    for n, kw in ((70, {}), (32, dict(epochs=3, lr=0.05, batch_size=12, seed=4, augment=True, crop_fraction=0.875))):
        torch.manual_seed(0)
        net = TinyNet()
        t = _bright_dark_target(n)
        got = train_finetune(net, 8, t, 16, num_workers=0, **kw).eval()
        settings = dict(epochs=20, lr=0.01, batch_size=64, seed=0) | kw
        want = naive_finetune(net, 8, t, 16, **settings)
        (ds, idx), = t.test
        x = imagenet_normalize(torch.stack([EvalImages(ds, idx, 16)[i][0] for i in range(len(idx))]).float() / 255)
        with torch.no_grad():
            torch.testing.assert_close(got(x), want(x), rtol=1e-4, atol=1e-5)
    seen = []
    real = ft.train_finetune
    monkeypatch.setattr(ft, "train_finetune", lambda *a: seen.append(a[4:]) or real(*a))
    ft.finetune(net, 8, t, 16, num_workers=0)
    assert seen == [(20, 0.01, 64, 0, False, 1.0, 0)]


def test_finetune_batches_boundaries_and_what_finetune_passes_on(monkeypatch):
    """rank_batches: whole batches of one seeded permutation, the remainder dropped (23 images at 12: one
    batch; 24: two), all n when n is below the batch; two images are enough to fine-tune, one image or a
    batch of one is refused with the reason; finetune() evaluates with its crop fraction and workers. Seen
    failing on (mutation survivors): the last whole batch dropped, a partial batch kept, 2 images refused,
    the crop fraction or the workers not passed to the test-side features."""
    from sassl.eval import finetune as ft
    from sassl.eval.finetune import rank_batches

    def batches(n, size):
        return rank_batches(n, size, torch.Generator().manual_seed(3))

    perm = torch.randperm(24, generator=torch.Generator().manual_seed(3)).tolist()
    assert batches(24, 12) == [perm[:12], perm[12:]]
    assert [len(b) for b in batches(23, 12)] == [12] and [len(b) for b in batches(25, 12)] == [12, 12]
    assert [len(b) for b in batches(5, 12)] == [5]
    torch.manual_seed(0)
    net = TinyNet()
    two = _bright_dark_target(2)
    assert ft.train_finetune(net, 8, two, 16, epochs=1, num_workers=0) is not None
    with pytest.raises(ValueError, match="batch_size 1 leaves fewer than 2 images per process on 1 processes"):
        ft.train_finetune(net, 8, _bright_dark_target(8), 16, batch_size=1, num_workers=0)
    seen = []
    real = ft.stream_features
    monkeypatch.setattr(ft, "stream_features", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    ft.finetune(net, 8, two, 16, epochs=1, crop_fraction=0.875, num_workers=0)
    assert seen == [{"num_workers": 0, "crop_fraction": 0.875}]


def test_evaluate_in_bf16(tmp_path, capsys, monkeypatch):
    """--precision bf16: the encoder's forwards run under bf16 autocast (features near, not equal to, float32's),
    its features are cached apart from float32's, the probe still learns, the resolved precision is recorded; fp16
    on the CPU and an unknown name are one line each."""
    from sassl.cli import main
    from sassl.eval.style_probe import stage_features
    from sassl.precision import Autocast, with_precision

    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "cache"))
    net, _ = load_encoder("random:resnet18")
    t = load_target("objects", max_per_split=45)
    ds, idx = t.test[0]
    f32 = stream_features(net, ds, idx, 32, num_workers=0)[0]
    wrapped = with_precision(net, "bf16")
    assert isinstance(wrapped, Autocast) and with_precision(net, "fp32") is net
    f16 = stream_features(wrapped, ds, idx, 32, num_workers=0)[0]
    assert f16.dtype == torch.float32 and not torch.equal(f16, f32)  # bf16 ran
    cos = torch.nn.functional.cosine_similarity(f16, f32, dim=1)
    assert cos.min() > 0.99, cos.min()  # measured about 0.9999
    assert all(p.dtype == torch.float32 for p in wrapped.parameters())
    stages = stage_features(wrapped, torch.rand(4, 3, 32, 32))  # hooks reach the wrapped encoder's stages
    assert list(stages) == ["layer1", "layer2", "layer3", "layer4"] and stages["layer4"].dtype == torch.float32

    args = ["evaluate", "random:resnet18", "--targets", "objects", "--protocols", "knn", "linear", "--seeds", "0",
            "--image-size", "32", "--max-per-split", "45", "--probe-epochs", "5", "--device", "cpu", "--baseline", "false"]
    runs = {}
    for precision in ("fp32", "bf16"):
        assert main(args + ["--precision", precision, "--out", str(tmp_path / precision)]) == 0
        runs[precision] = json.loads((tmp_path / precision / "summary.json").read_text())
        assert json.loads((tmp_path / precision / "config.json").read_text())["resolved"]["precision"] == precision
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 4  # train and test, per precision
    knn = {p: next(r["top1_mean"] for r in s if r["protocol"] == "knn") for p, s in runs.items()}
    assert abs(knn["bf16"] - knn["fp32"]) <= 10, knn  # the same encoder: near the same vote
    capsys.readouterr()
    assert main(args + ["--precision", "fp16", "--out", str(tmp_path / "x")]) == 2
    assert "precision: fp16 needs a GPU" in capsys.readouterr().err
    assert main(args + ["--precision", "fp8", "--out", str(tmp_path / "x")]) == 2
    assert "precision: expected one of auto, fp32, bf16, fp16, got 'fp8'" in capsys.readouterr().err


def test_rankme_on_embeddings_of_known_rank():
    """RankMe is r for embeddings spread evenly over r dimensions (whatever D and N), 1 for a collapsed set, the
    exp-entropy of s / sum(s) for given singular values (3, 1: not of s squared), and the naive formula's on
    random embeddings. Seen failing on: squared singular values, centred embeddings, entropy without exp."""
    from reference import naive_rankme
    from sassl.eval.rankme import rankme

    g = torch.Generator().manual_seed(0)
    for n, d, r in ((200, 64, 7), (50, 512, 20), (300, 16, 16)):
        u = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0]
        assert rankme(5.0 * u @ v.T) == pytest.approx(r, rel=1e-4), (n, d, r)
    collapsed = torch.randn(1, 32, generator=g).repeat(100, 1) + 3
    assert rankme(collapsed) == pytest.approx(1.0, rel=1e-4)
    u = torch.linalg.qr(torch.randn(40, 2, generator=g, dtype=torch.float64))[0]
    two = u @ torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)) @ torch.eye(2, 10, dtype=torch.float64)
    p = np.array([0.75, 0.25])
    assert rankme(two) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-4)  # 1.7548 (eps aside)
    z = torch.randn(64, 24, generator=g) @ torch.randn(24, 48, generator=g) + 0.5
    assert rankme(z) == pytest.approx(naive_rankme(z.numpy()), rel=1e-9)
    assert rankme(z.half()) == pytest.approx(naive_rankme(z.half().float().numpy()), rel=1e-6)
    with pytest.raises(ValueError, match="rankme: needs embeddings"):
        rankme(torch.zeros(0, 4))


def test_monitor_probe_and_rankme_equal_offline_ones(jpeg_folder):
    """The monitor's linear probe is the offline probe (linear_probe, same seed and epochs) on the very features
    its kNN vote uses, and its RankMe theirs; probe_epochs 0 leaves the probe out."""
    from reference import naive_rankme
    from sassl.data import get_dataset
    from sassl.eval.knn import KnnMonitor

    train, test = get_dataset(f"imagefolder:{jpeg_folder}"), get_dataset(f"imagefolder:{jpeg_folder}@val")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten())
    mon = KnnMonitor(train, test, 32, k=5, max_train=90, max_test=30, seed=3, num_workers=0, probe_epochs=7)
    got = mon.measure(net)
    tr_f, tr_y = stream_features(net, train, mon.train_idx, 32, num_workers=0)
    te_f, te_y = stream_features(net, test, mon.test_idx, 32, num_workers=0)
    want = linear_probe(tr_f, tr_y, te_f, te_y, 3, epochs=7, seed=3)["top1"]
    assert got["probe_top1"] == round(want, 2) and 100 / 3 / 2 < want <= 100
    assert got["rankme"] == round(naive_rankme(tr_f.numpy()), 2) and 1 < got["rankme"] <= 32
    assert got["knn_top1"] == mon(net)
    assert set(KnnMonitor(train, test, 32, max_train=30, max_test=9, num_workers=0).measure(net)) == {"knn_top1",
                                                                                                     "rankme"}
