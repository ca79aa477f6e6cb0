import pytest
import torch

from conftest import load_batch
from sassl.stylizer import SASSL, StyleBank, stylize
from reference import naive_sassl


@pytest.fixture(scope="module")
def images(photos):
    return load_batch(photos[:6], 64)


@pytest.fixture(scope="module")
def bank(stylizer, art):
    with torch.no_grad():
        return StyleBank(stylizer.embed(load_batch(art, 256)), {"count": len(art)})


@torch.no_grad()
@pytest.mark.parametrize("layers", [13, 4])
def test_bank_source_matches_naive_reference(stylizer, images, bank, layers):
    op = SASSL(stylizer, "bank", bank, p=1.0, layers=layers)
    y, prm = op(images, generator=torch.Generator().manual_seed(0))
    ref = naive_sassl(stylizer, images, bank.embeddings[prm.style_index], prm.alpha, prm.beta, layers)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batch_source_rolls_by_offset(stylizer, images):
    op = SASSL(stylizer, "batch", p=1.0, batch_offset=2)
    y, prm = op(images, generator=torch.Generator().manual_seed(1))
    n = len(images)
    assert prm.offset == 2 and prm.style_index.tolist() == [(i + 2) % n for i in range(n)]
    z_style = stylizer.embed(images)[prm.style_index]
    torch.testing.assert_close(y, naive_sassl(stylizer, images, z_style, prm.alpha, prm.beta), atol=1e-5, rtol=1e-5)
    # offset sampled per call when not fixed, never 0 (an image is not its own style)
    offs = {SASSL(stylizer, "batch", p=1.0).sample(n, torch.Generator().manual_seed(s)).offset for s in range(30)}
    assert offs <= set(range(1, n)) and len(offs) > 1


@torch.no_grad()
def test_noise_and_content_sources(stylizer, images):
    op = SASSL(stylizer, "noise", p=1.0, noise_std=0.5)
    y, prm = op(images, generator=torch.Generator().manual_seed(2))
    assert prm.noise.shape == (len(images), 100) and 0.4 < prm.noise.std() < 0.6
    torch.testing.assert_close(y, naive_sassl(stylizer, images, prm.noise, prm.alpha, prm.beta), atol=1e-5, rtol=1e-5)
    op = SASSL(stylizer, "content", p=1.0)
    y, prm = op(images, generator=torch.Generator().manual_seed(3))
    zc = stylizer.embed(images)
    torch.testing.assert_close(y, naive_sassl(stylizer, images, zc, prm.alpha, prm.beta), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_layers_zero_ignores_style(stylizer, images, bank):
    """With 0 stylized layers every CIN layer gets the content's embedding: the style can't matter."""
    a, _ = SASSL(stylizer, "bank", bank, p=1.0, layers=0)(images, generator=torch.Generator().manual_seed(4))
    b, _ = SASSL(stylizer, "noise", p=1.0, layers=0)(images, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)


@torch.no_grad()
def test_seeded_deterministic_and_replayable(stylizer, images, bank):
    op = SASSL(stylizer, "bank", bank, p=0.5)
    y1, p1 = op(images, generator=torch.Generator().manual_seed(7))
    y2, p2 = op(images, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(y1, y2)
    assert p1.to_dict() == p2.to_dict()
    y3, _ = op(images, params=p1)  # replay without a generator
    torch.testing.assert_close(y1, y3)
    y4, p4 = op(images, generator=torch.Generator().manual_seed(8))
    assert p4.to_dict() != p1.to_dict()


@torch.no_grad()
def test_parameters_are_per_image(stylizer, images, bank):
    prm = SASSL(stylizer, "bank", bank, p=0.5).sample(4096, torch.Generator().manual_seed(0))
    assert 0.45 < prm.apply.float().mean() < 0.55
    for v in (prm.alpha, prm.beta):
        assert 0.1 <= v.min() and v.max() <= 0.3 and v.std() > 0.05
        assert len(v.unique()) > 4000
    assert set(prm.style_index.unique().tolist()) == set(range(len(bank)))


@torch.no_grad()
def test_unselected_images_untouched_and_cost_nothing(stylizer, images, bank):
    seen = []
    hook = stylizer.transformer.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    try:
        op = SASSL(stylizer, "bank", bank, p=0.5)
        y, prm = op(images, generator=torch.Generator().manual_seed(0))
        assert 0 < prm.apply.sum() < len(images)
        assert seen == [int(prm.apply.sum())]  # the transformer ran on the selected images only
        torch.testing.assert_close(y[~prm.apply], images[~prm.apply], rtol=0, atol=0)
        assert (y[prm.apply] - images[prm.apply]).abs().mean() > 1e-3
        seen.clear()
        y0, _ = SASSL(stylizer, "bank", bank, p=0.0)(images)
        assert seen == [] and y0 is images
    finally:
        hook.remove()


def test_gradient_free(stylizer, images, bank):
    x = images.clone().requires_grad_(True)
    y, _ = SASSL(stylizer, "bank", bank, p=1.0)(x)
    assert not y.requires_grad
    assert all(not p.requires_grad for p in stylizer.parameters())


@torch.no_grad()
def test_pure_function_endpoints(stylizer, images, bank):
    n = len(images)
    zc, zs = stylizer.embed(images), bank.embeddings[:1].expand(n, -1)
    same = stylize(stylizer, images, zs, zc, torch.full((n,), 0.3), torch.zeros(n))
    torch.testing.assert_close(same, images)  # beta = 0: the content
    full = stylize(stylizer, images, zs, zc, torch.ones(n), torch.ones(n))
    torch.testing.assert_close(full, stylizer(images, zs))  # alpha = beta = 1: plain style transfer


@pytest.mark.parametrize("kwargs, msg", [
    (dict(p=1.5), "p: must lie in"),
    (dict(p=-0.1), "p: must lie in"),
    (dict(alpha=(0.3, 0.1)), r"alpha: need 0 <= min <= max <= 1, got \(0.3, 0.1\)"),  # one message for every range
    (dict(beta=(0.1, 1.2)), r"beta: need 0 <= min <= max <= 1, got \(0.1, 1.2\)"),
    (dict(alpha=0.2), r"alpha: expected a \(min, max\) pair"),
    (dict(layers=14), r"layers: must be an int in \[0, 13\]"),
    (dict(source="wikiart"), "source: expected one of"),
    (dict(source="bank", bank=None), "bank: source='bank' needs a StyleBank"),
    (dict(source="batch", batch_offset=0), "batch_offset"),
])
def test_bad_parameters_name_themselves(stylizer, bank, kwargs, msg):
    kw = dict(source="bank", bank=bank)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        SASSL(stylizer, **kw)


def test_bad_inputs(stylizer, images, bank):
    op = SASSL(stylizer, "bank", bank)
    with pytest.raises(ValueError, match=r"x: values must lie in \[0, 1\]"):
        op(images * 255)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3, H, W\)"):
        op(images[0])
    with pytest.raises(ValueError, match="params: sampled for 6 images"):
        op(images[:3], params=op.sample(6))
    with pytest.raises(ValueError, match="at least 2"):
        SASSL(stylizer, "batch", p=1.0)(images[:1])
    with pytest.raises(ValueError, match=r"\(M>0, 100\)"):
        StyleBank(torch.zeros(3, 99))
