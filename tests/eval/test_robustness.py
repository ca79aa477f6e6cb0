"""Style-robustness protocols against encoders whose answer is known, and end to end with the real stylizer."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from sassl.eval.robustness import check_heldout, content_pairs, style_invariance
from sassl.views import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize


class Fn(nn.Module):
    """A parameter-free encoder from a function (a dummy parameter gives it a device)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.p = fn, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.fn(x)


def _generated(n=24, size=16, seed=0):
    """Two classes of shapes (content: a bright square or a bright bar) in random colours (style)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 3, size, size)
    colour = torch.rand(n, 3, generator=g) * 0.6 + 0.4
    for i in range(n):
        if y[i] == 0:
            x[i, :, 4:12, 4:12] = colour[i][:, None, None]
        else:
            x[i, :, 7:9, 1:15] = colour[i][:, None, None]
    return x, y


def permute_colours(x, beta, g):
    """A stand-in style change: the colour channels rotated, blended at beta (draws nothing from g)."""
    return beta * x[:, [1, 2, 0]] + (1 - beta) * x


def test_constant_encoder_scores_exactly_one():
    x, y = _generated()
    rows = style_invariance(Fn(lambda t: torch.ones(len(t), 4)), x, y, permute_colours, betas=(1.0, 0.5))
    assert [r["cos_mean"] for r in rows] == [1.0, 1.0, 1.0] and rows[-1]["kind"].startswith("content")


def test_pixel_identity_matches_numpy():
    x, y = _generated()
    rows = style_invariance(Fn(lambda t: t.flatten(1)), x, y, permute_colours, betas=(1.0,))
    m, s = np.array(IMAGENET_MEAN)[None, :, None, None], np.array(IMAGENET_STD)[None, :, None, None]
    a = ((x.numpy() - m) / s).reshape(len(x), -1)
    b = ((permute_colours(x, 1.0, None).numpy() - m) / s).reshape(len(x), -1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert rows[0]["cos_mean"] == pytest.approx(cos.mean(), abs=1e-5)
    assert rows[0]["cos_ci95"] == pytest.approx(1.96 * cos.std(ddof=1) / np.sqrt(len(cos)), rel=1e-4)


def test_style_blind_encoder_scores_above_a_style_sensitive_one():
    x, y = _generated()
    # blind: the channel-averaged intensity map (nearly unchanged when colours rotate); sensitive: the mean
    # colour's deviation from grey (it rotates with them)
    blind = style_invariance(Fn(lambda t: t.mean(1).flatten(1)), x, y, permute_colours, betas=(1.0,))[0]
    sensitive = style_invariance(Fn(lambda t: t.mean((2, 3)) - t.mean((1, 2, 3))[:, None]), x, y, permute_colours,
                                 betas=(1.0,))[0]
    assert blind["cos_mean"] - blind["cos_ci95"] > sensitive["cos_mean"] + sensitive["cos_ci95"]  # CIs apart
    assert blind["cos_mean"] > 0.99 and sensitive["cos_mean"] < 0.9


def test_content_pairs_are_other_images_of_the_same_class():
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    p = content_pairs(y, seed=3)
    assert p[-1] == -1 and all(p[i] != i and y[p[i]] == y[i] for i in range(5))


def test_overlapping_styles_refused_unless_allowed():
    with pytest.raises(ValueError, match="is the style source this encoder was pre-trained with"):
        check_heldout("textures", "textures")
    check_heldout("textures", "textures", allow_overlap=True)
    check_heldout("textures", "paintings")


def test_evaluate_style_robustness_end_to_end(tmp_path):
    """The style protocols through `evaluate` with the real stylizer (held-out textures; the cue-conflict images
    in the target's own styles) on a small objects subset: rows for every beta and the content reference, a stylized accuracy with its clean counterpart,
    and a stylized target that reproduces from its seed."""
    from sassl.compare import instrument_rows
    from sassl.eval.checkpoint import load_encoder
    from sassl.eval.evaluate import EvalConfig, evaluate, heldout_stylizer

    protocols = ("style_invariance", "stylized", "shape_bias", "style_decodability", "stage_invariance")
    cfg = EvalConfig(encoder="random:resnet18", targets=("objects",), protocols=protocols,
                     image_size=32, max_per_split=40, robust_max_images=24, probe_epochs=3, num_workers=0,
                     device="cpu", out=str(tmp_path / "out"), robust_betas=(1.0, 0.25))
    res = evaluate(cfg, progress=False)
    inv = [r for r in res["robustness"] if r["protocol"] == "style_invariance"]
    kinds = [(r["kind"], r["beta"]) for r in inv]
    assert kinds == [("style change", 1.0), ("style change", 0.25), ("content change (same class)", None)]
    assert inv[1]["cos_mean"] > inv[0]["cos_mean"]  # a lighter blend changes less
    (dec,) = [r for r in res["robustness"] if r["protocol"] == "style_decodability"]
    assert dec["styles"] == 8 and dec["n_fit"] + dec["n_scored"] == 24 and 0 <= dec["style_top1"] <= 100
    stages = [(r["stage"], r["kind"]) for r in res["robustness"] if r["protocol"] == "stage_invariance"]
    assert stages[:2] == [("layer1", "style change"), ("layer1", "content change (same class)")] and len(stages) == 8
    st = {r["protocol"]: r for r in res["rows"]}
    assert set(st) == {"stylized-knn", "stylized-linear"} and st["stylized-knn"]["n_test"] == 24
    assert st["stylized-linear"]["drop"] == pytest.approx(st["stylized-linear"]["clean_top1"] - st["stylized-linear"]["top1"])
    assert (tmp_path / "out" / "robustness.csv").is_file()
    sb = {r["head"]: r for r in res["shape_bias"]}  # cue-conflict: the objects test images in each other's styles
    assert set(sb) == {"knn", "linear"} and all(r["n"] == 24 and 0 <= r["decisive"] <= 1 for r in sb.values())
    assert all(r["shape"] + r["texture"] == round(r["decisive"] * 24) for r in sb.values())
    assert (tmp_path / "out" / "shape_bias.csv").is_file() and (tmp_path / "out" / "figures" / "shape_bias.html").is_file()
    # the instruments as `sassl compare` reads them from the files just written: each on a 0-100 scale
    got = {r["protocol"]: r["top1"] for r in instrument_rows(tmp_path / "out")}
    want = {"invariance beta=1.0": inv[0]["cos_mean"], "invariance beta=0.25": inv[1]["cos_mean"],
            "invariance content": inv[2]["cos_mean"], "style decodability": dec["style_decodability"],
            "content decodability": dec["content_decodability"]}
    stage = {f"stage {r['stage']} {r['kind'].split()[0]}": r["cos_mean"] for r in res["robustness"]
             if r["protocol"] == "stage_invariance"}
    # layer4, pooled, is the output: its cosines are the invariance protocol's, listed once
    assert stage.pop("stage layer4 style") == inv[0]["cos_mean"] and stage.pop("stage layer4 content") == inv[2]["cos_mean"]
    want |= stage
    want |= {f"shape bias {h}": r["shape_bias"] for h, r in sb.items() if r["shape_bias"] == r["shape_bias"]}
    assert len(want) >= 13 and got == pytest.approx({k: 100 * v for k, v in want.items()})
    _, info = load_encoder("random:resnet18")
    stylize = heldout_stylizer(cfg, info, torch.device("cpu"))
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(stylize(x, 1.0, torch.Generator().manual_seed(5)), stylize(x, 1.0, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="pre-trained with"):
        heldout_stylizer(cfg, {"pretrain_config": {"style": "textures"}}, torch.device("cpu"))


def _coloured_shapes(n=36, size=12, seed=0):
    """Three classes whose shape (a square, a bar, a cross) and colour (per-channel mean and spread) both say the
    class, as in a training set where texture and shape agree."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    mask = torch.zeros(3, size, size)
    mask[0, 3:9, 3:9] = 1
    mask[1, 5:7, 1:11] = 1
    mask[2, 5:7, 2:10], mask[2, 2:10, 5:7] = 1, 1
    mean = torch.tensor([[0.7, 0.2, 0.2], [0.2, 0.7, 0.2], [0.2, 0.2, 0.7]])
    spread = torch.tensor([[0.2, 0.05, 0.1], [0.1, 0.2, 0.05], [0.05, 0.1, 0.2]])
    noise = 0.02 * torch.randn(n, 3, size, size, generator=g)
    x = mean[y][:, :, None, None] + spread[y][:, :, None, None] * (2 * mask[y][:, None] - 1) + noise
    return x, y


def _pixel_adain(content, style):
    """A stand-in style transfer: each channel of the content standardised, then given the style's mean and std."""
    def stats(t):
        return t.mean((2, 3), keepdim=True), t.std((2, 3), keepdim=True)
    (mc, sc), (ms, ss) = stats(content), stats(style)
    return (content - mc) / sc * ss + ms


def test_shape_bias_of_encoders_that_see_only_texture_or_only_shape():
    """An encoder of colour statistics alone answers with the exemplar's class on every cue-conflict image (shape
    bias 0), one of the standardised spatial pattern alone with the content's (shape bias 1); both are right on
    clean images. The counts are the hand-counted ones."""
    from sassl.eval.shape_bias import cue_conflict_pairs, shape_bias, shape_bias_scores

    x, y = _coloured_shapes()
    colour = lambda t: torch.cat([t.mean((2, 3)), t.std((2, 3))], 1)  # noqa: E731
    shape = lambda t: ((t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)).flatten(1)  # noqa: E731
    for name, embed, expected in (("texture", colour, 0.0), ("shape", shape, 1.0)):
        centroids = torch.stack([embed(x)[y == c].mean(0) for c in range(3)])
        nearest = {"centroid": lambda f, c=centroids: torch.cdist(f, c).argmin(1)}
        (row,) = shape_bias(embed, nearest, x, y, _pixel_adain, seed=3)
        assert row["shape_bias"] == expected and row["decisive"] == 1.0 and row["clean_top1"] == 100.0, name
        assert (row["shape"], row["texture"], row["n"]) == ((36, 0, 36) if expected else (0, 36, 36))
    pairs = cue_conflict_pairs(y, seed=3)
    assert (y[pairs] != y).all() and torch.equal(pairs, cue_conflict_pairs(y, seed=3))
    assert not torch.equal(pairs, cue_conflict_pairs(y, seed=4))
    assert len(set(pairs[y == 0].tolist())) > 3  # exemplars drawn per image, not one per class
    assert (cue_conflict_pairs(torch.zeros(4, dtype=torch.long)) == -1).all()
    s = shape_bias_scores(torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 0, 2, 1, 1]), torch.tensor([1, 1, 0, 2, 2]))
    assert (s["shape"], s["texture"], s["n"]) == (3, 2, 5) and s["shape_bias"] == 0.6 and s["decisive"] == 1.0
    s = shape_bias_scores(torch.tensor([2, 2]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert np.isnan(s["shape_bias"]) and s["decisive"] == 0.0
    with pytest.raises(ValueError, match="at least two classes"):
        shape_bias(colour, {}, x[:3], torch.zeros(3, dtype=torch.long), _pixel_adain)


def _centroid_probe(feats, y, classes):
    """A nearest-class-mean classifier: deterministic, for probes whose right answer is known."""
    centroids = torch.stack([feats[y == c].mean(0) if (y == c).any() else torch.full_like(feats[0], 1e9)
                             for c in range(classes)])
    return lambda f: torch.cdist(f, centroids).argmin(1)


def test_style_decodability_of_encoders_that_keep_only_style_or_only_content():
    """Rendered with K colour statistics (a stand-in style transfer), an encoder of colour statistics decodes the
    style perfectly and the content at chance; an encoder of the standardised spatial pattern the reverse. The
    chance is the most frequent label's share in the scored half."""
    from sassl.eval.style_probe import chance_corrected, style_decodability

    x, y = _coloured_shapes(n=60)
    g = torch.Generator().manual_seed(1)
    looks = torch.rand(5, 3, 12, 12, generator=g)  # 5 styles: each a random image whose colour statistics are taken
    render = lambda imgs, ids: _pixel_adain(imgs, looks[ids])  # noqa: E731
    colour = lambda t: torch.cat([t.mean((2, 3)), t.std((2, 3))], 1)  # noqa: E731
    shape = lambda t: ((t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)).flatten(1)  # noqa: E731
    r = style_decodability(colour, _centroid_probe, x, y, render, 5, seed=2)
    assert r["style_top1"] == 100.0 and r["style_decodability"] == 1.0 and r["content_decodability"] < 0.35
    r = style_decodability(shape, _centroid_probe, x, y, render, 5, seed=2)
    assert r["content_top1"] == 100.0 and r["content_decodability"] == 1.0 and r["style_decodability"] < 0.35
    assert (r["styles"], r["n_fit"], r["n_scored"]) == (5, 30, 30)
    assert chance_corrected(70.0, torch.tensor([0, 0, 0, 1])) == (75.0, -0.2)
    assert chance_corrected(100.0, torch.tensor([2, 0, 1, 1])) == (50.0, 1.0)
    with pytest.raises(ValueError, match="at least 4 images and 2 styles"):
        style_decodability(colour, _centroid_probe, x, y, render, 1)


def test_stage_features_are_each_stages_pooled_output():
    """ResNet: layer1-4 averaged over space (layer4's is the backbone's own output); ViT: the token mean after each
    quarter of the blocks; a stylization that changes nothing has cosine 1 at every stage."""
    from sassl.backbones import create_backbone
    from sassl.eval.style_probe import stage_features, stage_invariance

    torch.manual_seed(0)
    net, _ = create_backbone("resnet18", small_images=False, image_size=64)
    x, y = torch.rand(6, 3, 64, 64), torch.tensor([0, 0, 1, 1, 2, 2])
    f = stage_features(net, x, batch_size=4)
    assert [(k, v.shape[1]) for k, v in f.items()] == [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]
    net.eval()
    with torch.no_grad():
        assert torch.allclose(f["layer4"], net(imagenet_normalize(x)), atol=1e-5)
        h = net.maxpool(net.relu(net.bn1(net.conv1(imagenet_normalize(x)))))
        assert torch.allclose(f["layer1"], net.layer1(h).mean((2, 3)), atol=1e-5)
    vit, _ = create_backbone("vit_tiny", small_images=False, image_size=32)
    fv = stage_features(vit, torch.rand(3, 3, 32, 32))
    assert list(fv) == ["blocks 1-3", "blocks 4-6", "blocks 7-9", "blocks 10-12"] and fv["blocks 1-3"].shape == (3, 192)
    rows = stage_invariance(net, x, y, x.clone())
    style = [r for r in rows if r["kind"] == "style change"]
    assert [r["stage"] for r in style] == ["layer1", "layer2", "layer3", "layer4"]
    assert all(abs(r["cos_mean"] - 1) < 1e-5 for r in style)
    assert len([r for r in rows if r["kind"] == "content change (same class)"]) == 4
