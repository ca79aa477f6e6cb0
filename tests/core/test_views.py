import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from conftest import load_batch
from sassl.data.registry import Dataset
from sassl.stylizer import SASSL
from sassl.data.loader import TwoCrops, sample_crop
from sassl.training import config_from_dict
from sassl.views import (VIEWS, TwoViews, ViewConfig, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
                         gaussian_blur)


@pytest.mark.parametrize("ours, ref, factors", [
    (adjust_brightness, TF.adjust_brightness, [0.6, 0.9, 1.2, 1.4]),
    (adjust_contrast, TF.adjust_contrast, [0.6, 0.9, 1.2, 1.4]),
    (adjust_saturation, TF.adjust_saturation, [0.8, 0.9, 1.1, 1.2]),
    (adjust_hue, TF.adjust_hue, [-0.1, -0.03, 0.04, 0.1]),
])
def test_batched_colour_ops_match_torchvision_per_image(photos, ours, ref, factors):
    x = load_batch(photos[:4], 32)
    f = torch.tensor(factors)
    want = torch.stack([ref(x[i], float(f[i])) for i in range(4)])
    torch.testing.assert_close(ours(x, f), want, atol=1e-4, rtol=0)


def test_batched_blur_matches_torchvision_per_image(photos):
    x, s = load_batch(photos[:4], 32), torch.tensor([0.1, 0.7, 1.3, 2.0])
    want = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(s[i])] * 2) for i in range(4)])
    torch.testing.assert_close(gaussian_blur(x, s, 7), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", [ViewConfig(), ViewConfig(flip_p=0.3, jitter_p=0.6, gray_p=0.4, blur_p=(0.7, 0.25),
                                                solarize_p=(0.0, 0.55))])
def test_per_image_draw_rates_match_view_config(cfg):
    """Each flag is Bernoulli(p) from ViewConfig: over n=20000 draws the rate is within 5 binomial sds, sqrt(p(1-p)/n)."""
    n, views = 20_000, TwoViews(cfg)
    g = torch.Generator().manual_seed(0)
    for view in (0, 1):
        p = views.sample(n, view, g)
        want = {"flip": cfg.flip_p, "jitter": cfg.jitter_p, "gray": cfg.gray_p, "blur": cfg.blur_p[view],
                "solarize": cfg.solarize_p[view]}
        for name, prob in want.items():
            rate = getattr(p, name).float().mean().item()
            # sd is 0 at p = 0 or 1: view 1 (solarize_p[0] = 0) must never solarize, blur_p = 1.0 must always blur
            assert abs(rate - prob) <= 5 * (prob * (1 - prob) / n) ** 0.5, (view, name, rate, prob)


def test_crop_box_follows_the_ranges():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, w, h = sample_crop(120, 80, g)
        assert 0 <= left and left + w <= 120 and 0 <= top and top + h <= 80
        assert 0.08 * 9600 * 0.9 <= w * h <= 9600


def test_randomness_is_per_image(photos):
    x = load_batch(photos[:1], 48).expand(16, -1, -1, -1).contiguous()
    v1, v2, (p1, p2) = TwoViews()(x, x, torch.Generator().manual_seed(0))
    assert len({tuple(r.tolist()) for r in p1.factors}) == 16
    assert 0 < p1.flip.sum() < 16
    flat = v1.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(16) * 1e9).min() > 1e-3  # no two identical views
    assert p1.blur.all() and not p1.solarize.any()  # left view: blur 1.0, solarize 0.0


def test_views_seeded_and_sassl_only_on_left(stylizer, photos, art):
    x1, x2 = load_batch(photos[:6], 48), load_batch(photos[5:11], 48)
    on = TwoViews(sassl=SASSL(stylizer, "batch", p=1.0))
    off = TwoViews(sassl=SASSL(stylizer, "batch", p=0.0))  # same random draws, nothing stylized
    a1, a2, pa = on(x1, x2, torch.Generator().manual_seed(5))
    b1, b2, pb = off(x1, x2, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a2, b2)            # right view untouched by SASSL
    assert (a1 - b1).abs().mean() > 1e-3          # left view stylized
    c1, c2, _ = on(x1, x2, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a1, c1)
    assert pa[0].sassl.apply.all() and pa[1].sassl is None


def test_two_crops_reproducible_per_epoch(photos):
    ds = Dataset("t", [0, 1], ["a", "b"], files=list(photos[:2]))
    crops = TwoCrops(ds, 32, seed=1)
    a = crops[0]
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.uint8 and not torch.equal(a[0], a[1])
    torch.testing.assert_close(crops[(0, 0)][0], a[0])  # an int index is epoch 0
    assert not torch.equal(crops[(1, 0)][0], a[0])


def test_blur_sigma_scales_with_crop_size():
    from sassl.views import TwoViews, ViewConfig

    cfg = ViewConfig(flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=(1.0, 1.0), solarize_p=(0.0, 0.0))
    x = torch.rand(3, 3, 64, 64)
    views = TwoViews(cfg, normalize=False)
    p = views.sample(3, 0, torch.Generator().manual_seed(0))
    want = gaussian_blur(x, p.sigma * 64 / 224, 7)  # kernel: 10% of the side, odd
    torch.testing.assert_close(views.apply(x, p), want)
    raw = TwoViews(ViewConfig(**{**cfg.__dict__, "blur_reference_size": 0}), normalize=False)
    torch.testing.assert_close(raw.apply(x, p), gaussian_blur(x, p.sigma, 7))


def test_online_towers_give_the_target_the_unstylized_view(stylizer, photos):
    """sassl_towers='online': the online view 1 is stylized, the target's view 1 is the same crop with the same
    draws (flip, jitter, blur, ...) and no SASSL; 'both' gives the target nothing extra (it sees view 1)."""
    x1, x2 = load_batch(photos[:6], 48), load_batch(photos[5:11], 48)
    online = TwoViews(sassl=SASSL(stylizer, "batch", p=1.0), towers="online")
    off = TwoViews(sassl=SASSL(stylizer, "batch", p=0.0))  # same draws, nothing stylized
    prep = online.prepare(x1, x2, torch.Generator().manual_seed(5))
    v1, _, _ = online.finish(prep)
    clean1, _, _ = off(x1, x2, torch.Generator().manual_seed(5))
    torch.testing.assert_close(online.target_view(prep), clean1)
    assert (v1 - clean1).abs().mean() > 1e-3
    both = TwoViews(sassl=SASSL(stylizer, "batch", p=1.0))
    assert both.target_view(both.prepare(x1, x2, torch.Generator().manual_seed(5))) is None
    with pytest.raises(ValueError, match="sassl_towers: expected one of both, online"):
        TwoViews(towers="target")


def test_each_method_has_its_own_views():
    """SimCLR's set is symmetric (blur 0.5 on both views, no solarisation, colour strength 1); BYOL's and MoCo
    v3's are asymmetric; each learner picks its own unless told otherwise."""
    assert VIEWS["simclr"].blur_p == (0.5, 0.5) and VIEWS["simclr"].solarize_p == (0.0, 0.0)
    assert (VIEWS["simclr"].brightness, VIEWS["simclr"].hue) == (0.8, 0.2)
    assert VIEWS["byol"].blur_p == (1.0, 0.1) and VIEWS["mocov3"] == VIEWS["byol"]
    got = {n: config_from_dict({"learner": n}).views for n in ("mocov2", "mocov2-queue", "simclr", "byol", "mocov3")}
    assert got == {"mocov2": "byol", "mocov2-queue": "mocov2", "simclr": "simclr", "byol": "byol", "mocov3": "mocov3"}
    assert config_from_dict({"learner": "simclr", "views": "byol"}).views == "byol"
    with pytest.raises(ValueError, match="views: expected one of byol, simclr, mocov2, mocov3"):
        config_from_dict({"views": "dino"})


def test_views_grid_replays_the_first_rows_draws(photos):
    """TensorBoard's views grid runs the view ops on its rows only: the same pixels as the whole batch's views
    cut to those rows (each image's draws, not the first n of another order or the batch's first draw for all)."""
    import torchvision

    from sassl.tracking import views_grid

    x1, x2 = load_batch(photos[:6], 32), load_batch(photos[5:11], 32)
    views = TwoViews()
    prep = views.prepare(x1, x2, torch.Generator().manual_seed(3))
    v1, v2, _ = views.finish(prep)
    unnorm = lambda v: v * views.std + views.mean  # noqa: E731
    want = torchvision.utils.make_grid(torch.stack([x1[:4], unnorm(v1[:4]), unnorm(v2[:4])], 1).flatten(0, 1).clamp(0, 1),
                                       nrow=3, padding=2)
    torch.testing.assert_close(views_grid(views, prep, rows=4), want, atol=1e-5, rtol=0)


def test_multi_crop_local_crops_views_and_sassl_crops(photos, jpeg_folder, stylizer):
    """Multi-crop: TwoCrops draws the local crops after the two global ones (the global crops are those of a
    loader without local crops), at local_size; TwoViews draws their ops after the global views' (view 1 and 2's
    draws unchanged) with DINO's local ops (blur 0.5, no solarisation); sassl_crops global1 stylizes crop 1 only,
    global crop 2 as well, all every local crop too; the views grid shows each local view."""
    from sassl.data import get_dataset
    from sassl.tracking import views_grid

    ds = get_dataset(f"imagefolder:{jpeg_folder}")
    plain, multi = TwoCrops(ds, 32, seed=4), TwoCrops(ds, 32, seed=4, local_crops=3, local_size=16)
    for i in (0, 7):
        a, b = plain[(1, i)], multi[(1, i)]
        assert len(a) == 3 and len(b) == 4 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
        assert b[3].shape == (3, 3, 16, 16) and b[3].dtype == torch.uint8 and not torch.equal(b[3][0], b[3][1])
    with pytest.raises(ValueError, match="local_crops: multi-crop is cut in the loader workers"):
        TwoCrops(ds, 32, local_crops=2, decode="device")

    x1, x2 = load_batch(photos[:6], 32), load_batch(photos[5:11], 32)
    local = [load_batch(photos[k:k + 6], 16) for k in (1, 2)]
    views = TwoViews()
    two, four = (views.prepare(x1, x2, torch.Generator().manual_seed(3), loc) for loc in (None, local))
    for f in ("flip", "factors", "blur", "solarize"):
        assert torch.equal(getattr(two.p1, f), getattr(four.p1, f)) and torch.equal(getattr(two.p2, f), getattr(four.p2, f))
    assert len(four.pl) == 2 and not any(p.solarize.any() for p in four.pl)
    many = views.sample(4000, 2, torch.Generator().manual_seed(0))
    assert abs(many.blur.float().mean().item() - 0.5) < 0.03 and not many.solarize.any()
    assert [v.shape for v in views.local_views(four)] == [(6, 3, 16, 16)] * 2 and views.local_views(two) == []
    grid = views_grid(views, four, rows=2)
    assert grid.shape[-1] == 5 * 32 + 6 * 2  # crop, view 1, view 2 and two local views, padded by 2

    op = SASSL(stylizer, "batch", p=1.0)
    for crops, stylized in (("global1", (True, False, False)), ("global", (True, True, False)),
                            ("all", (True, True, True))):
        prep = TwoViews(sassl=op, crops=crops).prepare(x1, x2, torch.Generator().manual_seed(3), local)
        changed = (not torch.equal(prep.crop1, x1), not torch.equal(prep.crop2, x2),
                   not torch.equal(prep.local[0], local[0]))
        assert changed == stylized, crops
    with pytest.raises(ValueError, match="sassl_crops: expected one of global1, global, all"):
        TwoViews(crops="left")


def test_multi_crop_settings_are_checked_before_any_data():
    """local_crops only for a learner that takes them, not with decode device, a local size the backbone takes;
    sassl_crops a known choice, and only with both towers; DINO brings its 8 local crops and global scale."""
    cfg = config_from_dict({"learner": "dino"})
    assert (cfg.local_crops, cfg.crop_scale, cfg.sassl_crops) == (8, (0.4, 1.0), "global1")
    from sassl.training.config import local_size

    assert local_size(cfg) == 24 and local_size(config_from_dict({"learner": "dino", "image_size": 224})) == 96
    bad = [({"learner": "simclr", "local_crops": 2}, "local_crops: simclr takes two views; multi-crop is for dino"),
           ({"learner": "dino", "decode": "device"}, "local_crops: multi-crop is cut in the loader workers"),
           ({"learner": "dino", "backbone": "vit_tiny", "image_size": 64}, "local_size: image_size: 24 is not a "
                                                                          "multiple of the ViT patch size 16"),
           ({"learner": "dino", "local_size": 80}, r"local_size: 80 px must lie in \[16, image_size 64\]"),
           ({"sassl_crops": "left"}, "sassl_crops: expected one of global1, global, all"),
           ({"learner": "byol", "sassl_crops": "global", "sassl_towers": "online"}, "the target tower would see")]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            config_from_dict(values)
    assert config_from_dict({"learner": "dino", "backbone": "vit_tiny", "image_size": 64, "local_size": 32})
