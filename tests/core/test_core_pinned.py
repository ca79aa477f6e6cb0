"""The method's core pinned by tests that a plausible wrong implementation fails: expected values are written
out by hand or come from a naive reference written here, never from the code under test. Each test names the
wrong versions it was seen to fail on (in its docstring)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import naive_info_nce, naive_nt_xent, naive_nt_xent_of_rank, naive_probe_logits, naive_weighted_knn_top1

# naive references: tests/reference.py

def _tiny(name: str, **kw):
    from sassl.learners import create_learner

    torch.manual_seed(0)
    return create_learner(name, "resnet18", small_images=True, proj_hidden=32, proj_dim=16, pred_hidden=32, **kw)


def _views(n: int = 6, size: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


# ----------------------------------------------------------------------------- which views each loss pairs

@torch.no_grad()
def test_mocov2_pairs_each_view_with_the_other_views_keys():
    """loss = (InfoNCE(q1, k2) + InfoNCE(q2, k1)) / 2 with q = predictor(projector(backbone)) and k the target
    tower's projection, at T = 0.1. Seen failing on: q1 against k1 (same view), keys from the online tower,
    a sum instead of the mean of the two directions."""
    model = _tiny("mocov2").eval()  # BN on running statistics: the towers are plain functions here
    assert isinstance(model.predictor, torch.nn.Sequential) and model.temperature == 0.1  # A.3: a predictor
    assert isinstance(_tiny("mocov2-queue").predictor, torch.nn.Identity)  # classic MoCo v2: none
    x1, x2 = _views()
    loss, _ = model(x1, x2, None)
    q1, q2 = model.online(x1), model.online(x2)
    k1, k2 = model.target(x1), model.target(x2)
    want = 0.5 * (naive_info_nce(q1, k2, 0.1) + naive_info_nce(q2, k1, 0.1))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


@torch.no_grad()
def test_mocov2_queue_negatives_and_contents_after_a_step():
    """Classic MoCo v2: the queue as it was before the step adds negatives at T = 0.2; after the step its first
    2B rows are the L2-normalised keys (k1 of all ranks, then k2) and the pointer moved by 2B. Seen failing on:
    the queue read after enqueuing, un-normalised keys, the pointer left at 0."""
    model = _tiny("mocov2-queue").eval()
    assert model.queue_size == 16384 and model.temperature == 0.2
    x1, x2 = _views()
    before = model.queue.clone()
    q1, q2, k1, k2 = model.online(x1), model.online(x2), model.target(x1), model.target(x2)
    loss, _ = model(x1, x2, None)
    full = 0.5 * (naive_info_nce(q1, k2, 0.2, before) + naive_info_nce(q2, k1, 0.2, before))
    assert loss.item() == pytest.approx(full.item(), rel=1e-4)
    keys = F.normalize(torch.cat([k1, k2]), dim=1)
    torch.testing.assert_close(model.queue[:12], keys, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.queue[12:], before[12:])
    assert int(model.queue_ptr) == 12


@torch.no_grad()
def test_byol_regresses_each_prediction_on_the_other_views_target():
    """loss = (2 - 2 cos(p1, z2) + 2 - 2 cos(p2, z1)) / 2, batch mean. Seen failing on: p1 against z1,
    un-normalised regression (MSE of raw vectors), the target from the online tower."""
    model = _tiny("byol").eval()
    assert isinstance(model.predictor, torch.nn.Sequential)  # BYOL's online tower has a predictor
    assert model.backbone.conv1.kernel_size == (3, 3)  # small_images: the CIFAR stem
    x1, x2 = _views()
    loss, _ = model(x1, x2, None)
    p1, p2, z1, z2 = model.online(x1), model.online(x2), model.target(x1), model.target(x2)
    naive = sum(2 - 2 * float(F.cosine_similarity(p, z, dim=0)) for pp, zz in ((p1, z2), (p2, z1))
                for p, z in zip(pp, zz)) / (2 * len(x1))
    assert loss.item() == pytest.approx(naive, rel=1e-5)


@torch.no_grad()
def test_simclr_nt_xent_against_loops():
    """NT-Xent at T = 0.1 over 2B anchors, each with its other view positive and 2B - 2 negatives (itself
    excluded). Seen failing on: self-similarity left in the denominator, the positive excluded from it,
    only one view's anchors."""
    model = _tiny("simclr").eval()
    x1, x2 = _views()
    loss, _ = model(x1, x2)
    z1, z2 = model.projector(model.backbone(x1)), model.projector(model.backbone(x2))
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, 0.1).item(), rel=1e-5)


# ----------------------------------------------------------------------------- the target's momentum

def test_momentum_schedule_written_out():
    """BYOL's schedule 1 - (1 - m0)(cos(pi k / K) + 1) / 2, values computed by hand. Seen failing on: a linear
    ramp (0.995 at k = 25 of 100), a schedule ending below 1, m0 and 1 - m0 swapped."""
    from sassl.learners import cosine_momentum

    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(25, 100, 0.99) == pytest.approx(0.9914644661, abs=1e-9)  # 1 - 0.01 * (0.70711 + 1) / 2
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(10, 40, 0.996) == pytest.approx(0.9965857864, abs=1e-9)  # 1 - 0.004 * (0.70711 + 1) / 2
    assert cosine_momentum(1, 1, 0.99) == pytest.approx(1.0)  # a one-step run ends at 1 too


@torch.no_grad()
def test_ema_update_written_out():
    """target <- m target + (1 - m) online for parameters; BN statistics copied. Seen failing on: m and 1 - m
    swapped, the online tower updated instead, statistics averaged."""
    model = _tiny("byol")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
        for b in model.backbone.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    online = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    target = {k: v.clone() for k, v in model.target_backbone.state_dict().items()}
    model.update_target(0.9)
    params = {n for n, _ in model.backbone.named_parameters()}
    for k, v in model.target_backbone.state_dict().items():
        want = 0.9 * target[k] + 0.1 * online[k] if k in params else online[k]
        torch.testing.assert_close(v, want, atol=1e-6, rtol=0, msg=k)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, online[k]), k  # the online tower is left alone


# ----------------------------------------------------------------------------- kNN

def _unit(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_knn_votes_are_cosine_weighted_at_t_007():
    """Wu et al.'s weighted kNN: cosine similarity, votes exp(s / 0.07). Built so that each wrong version
    predicts another class. Query e1 (k = 3): two class-0 neighbours at cos 0.80 and one class-1 neighbour at
    cos 0.86: exp(0.06 / T) > 2 iff T < 0.0866, so T = 0.07 picks class 1 and T = 0.1 or an unweighted vote
    class 0. Second query: gap 0.04: class 0 at T = 0.07, class 1 at T = 0.05. Third query (k = 1): a class-2
    point in the query's direction but 10x longer (cosine 1, far in Euclidean distance) against a class-0 point
    near it (cosine 0.8): cosine picks class 2, Euclidean class 0. Seen failing on: an unweighted vote, T = 0.1,
    Euclidean neighbours, an un-normalised query (a query twice as long doubles the gap: class 1)."""
    from sassl.eval.knn import knn_predict

    def at(c):  # a unit vector at cosine c to e1, in its own plane
        return math.sqrt(1 - c * c)

    train = torch.stack([
        _unit(0.80, at(0.80), 0, 0, 0), _unit(0.80, 0, at(0.80), 0, 0), _unit(0.86, 0, 0, at(0.86), 0),
    ])
    labels = torch.tensor([0, 0, 1])
    q = _unit(1, 0, 0, 0, 0)[None]
    assert knn_predict(train, labels, q, 3, k=3).tolist() == [1]
    assert knn_predict(train, labels, q, 3, k=3, temperature=0.1).tolist() == [0]
    train2 = train.clone()
    train2[2] = _unit(0.84, 0, 0, at(0.84), 0)
    assert knn_predict(train2, labels, q, 3, k=3).tolist() == [0]
    assert knn_predict(train2, labels, q, 3, k=3, temperature=0.05).tolist() == [1]
    assert knn_predict(train2, labels, 2 * q, 3, k=3).tolist() == [0]  # a longer query: the same cosines
    far = torch.stack([_unit(10, 0, 0, 0, 0), _unit(0.8, 0, 0, 0, at(0.8))])
    assert knn_predict(far, torch.tensor([2, 0]), q, 3, k=1).tolist() == [2]


# ----------------------------------------------------------------------------- linear probe

def test_linear_probe_optimiser_settings_are_pinned(monkeypatch):
    """SGD with Nesterov momentum 0.9, no weight decay, the given lr, cosine over every step of every epoch
    (DESIGN §2.2). Seen failing on: weight decay 1e-4, plain momentum, a schedule per epoch."""
    from sassl.eval import linear

    seen = {}
    real_sgd, real_cos = torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR

    def sgd(params, **kw):
        seen["sgd"] = kw
        return real_sgd(params, **kw)

    def cos(opt, t_max, *a, **kw):
        seen["t_max"] = t_max
        return real_cos(opt, t_max, *a, **kw)

    monkeypatch.setattr(torch.optim, "SGD", sgd)
    monkeypatch.setattr(torch.optim.lr_scheduler, "CosineAnnealingLR", cos)
    linear.train_linear(torch.randn(50, 4), torch.arange(50) % 2, 2, epochs=3, lr=0.3, batch_size=16)
    assert seen["sgd"] == {"lr": 0.3, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}
    assert seen["t_max"] == 3 * 4  # 3 epochs x ceil(50 / 16) steps


def test_linear_probe_generalises_to_held_out_points_and_not_to_noise():
    """Held-out points of two Gaussian blobs (a test set that is not the training set) are classified
    correctly; on random labels the probe predicts both classes on held-out points, near chance (a classifier
    that always says one class would score 50% here too, so that is checked apart)."""
    from sassl.eval.linear import linear_probe

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0, 0, 0], [-3.0, 0, 0, 0]])  # Bayes accuracy 99.9%
    y = torch.arange(400) % 2
    x = centres[y] + torch.randn(400, 4, generator=g)
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], 2, epochs=10)
    assert res["top1"] >= 97.0
    noise_y = torch.randint(0, 2, (400,), generator=g)
    xn = torch.randn(400, 16, generator=g)
    res = linear_probe(xn[:300], noise_y[:300], xn[300:], noise_y[300:], 2, epochs=10)
    assert 30.0 <= res["top1"] <= 70.0
    from sassl.eval.linear import predict, train_linear

    pred = predict(train_linear(xn[:300], noise_y[:300], 2, epochs=10), xn[300:]).argmax(1)
    assert 0.2 < pred.float().mean() < 0.8  # both classes predicted


# ----------------------------------------------------------------------------- SASSL's sampling

def test_sassl_draws_follow_the_papers_distributions(stylizer):
    """alpha, beta ~ U(0.1, 0.3), apply ~ Bernoulli(0.8), over 200,000 draws: the extremes come within 2e-4 of
    the bounds and the means within 4 standard errors. Seen failing on: U(0.11, 0.29), U(0.1, 0.3) for alpha
    but beta's range for both, p = 0.75."""
    from sassl.stylizer import SASSL

    op = SASSL(stylizer, source="batch")
    d = op.sample(200_000, torch.Generator().manual_seed(0))
    for v in (d.alpha, d.beta):
        assert 0.1 <= float(v.min()) < 0.1002 and 0.2998 < float(v.max()) <= 0.3
        assert abs(float(v.mean()) - 0.2) < 4 * 0.2 / math.sqrt(12) / math.sqrt(200_000)
    assert abs(float(d.apply.float().mean()) - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 200_000)
    other = SASSL(stylizer, source="batch", alpha=(0.0, 0.5), beta=(0.6, 0.7)).sample(50_000, torch.Generator().manual_seed(0))
    assert float(other.alpha.max()) > 0.49 and 0.6 <= float(other.beta.min()) and float(other.beta.max()) <= 0.7


def test_sassl_at_another_embed_size_against_the_formula(stylizer):
    """The ImageNet recipes embed at 256 px and stylize 224 px crops: the op's output equals, per image,
    beta T(x, blend(P(resize(style, 256)), P(resize(x, 256)), alpha)) + (1 - beta) x, computed here image by
    image. Seen failing on: contents embedded at the crop size, the style image stylized instead of the
    content, the embedding blend reversed."""
    from sassl.stylizer import SASSL
    from sassl.stylizer.augment import blend_embeddings

    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 64, 64, generator=g)
    def up(im):  # the resize to the embedding size, as Magenta's predictor input
        return F.interpolate(im[None], size=(96, 96), mode="bilinear", antialias=True, align_corners=False)

    op = SASSL(stylizer, source="batch", p=1.0, batch_offset=1, embed_size=96)
    y, prm = op(x, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(3):
            j = (i + 1) % 3
            zs, zc = stylizer.predictor(up(x[j])), stylizer.predictor(up(x[i]))
            z = blend_embeddings(zs, zc, prm.alpha[i:i + 1])
            want = prm.beta[i] * stylizer.transformer(x[i:i + 1], z) + (1 - prm.beta[i]) * x[i:i + 1]
            torch.testing.assert_close(y[i:i + 1], want, atol=2e-4, rtol=0)
    bank = torch.randn(5, 100, generator=g)  # bank styles: the content alone is embedded, at 96 px too
    op = SASSL(stylizer, source="bank", bank=bank, p=1.0, embed_size=96)
    y, prm = op(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for i in range(3):
            zc = stylizer.predictor(up(x[i]))
            z = blend_embeddings(bank[prm.style_index[i]][None], zc, prm.alpha[i:i + 1])
            want = prm.beta[i] * stylizer.transformer(x[i:i + 1], z) + (1 - prm.beta[i]) * x[i:i + 1]
            torch.testing.assert_close(y[i:i + 1], want, atol=2e-4, rtol=0)


# ----------------------------------------------------------------------------- the view pipeline

def test_view_pipeline_equals_torchvisions_ops_in_order():
    """TwoViews.apply as a whole against torchvision's functional ops, image by image, in the order the draws
    give: flip, colour jitter in its per-image order, grayscale, Gaussian blur, solarize, ImageNet
    normalisation. Seen failing on: jitter in a fixed order, blur before grayscale, solarize threshold 0.25."""
    import torchvision.transforms.v2.functional as TF

    from sassl.views import VIEWS, TwoViews

    views = TwoViews(VIEWS["simclr"])  # jitter 0.8, gray 0.2, blur 0.5 on both views
    views.cfg = views.cfg.__class__(**{**views.cfg.__dict__, "solarize_p": (0.5, 0.5), "blur_reference_size": 0})
    n, size = 24, 32
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    p = views.sample(n, 0, torch.Generator().manual_seed(3))
    assert p.flip.any() and p.jitter.any() and p.gray.any() and p.blur.any() and p.solarize.any()
    got = views.apply(x, p)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    k = max(3, int(0.1 * size) | 1)
    for i in range(n):
        y = x[i]
        if p.flip[i]:
            y = TF.horizontal_flip(y)
        if p.jitter[i]:
            for op in p.order[i].tolist():
                y = ops[op](y, float(p.factors[i, op]))
        if p.gray[i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p.blur[i]:
            s = float(p.sigma[i])
            y = TF.gaussian_blur(y, [k, k], [s, s])
        if p.solarize[i]:
            y = TF.solarize(y, 0.5)
        y = TF.normalize(y, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        torch.testing.assert_close(got[i], y, atol=2e-3, rtol=0, msg=f"image {i}")


# ----------------------------------------------------------------------------- style space scores

def test_frechet_distance_with_correlated_covariances():
    """|mu_a - mu_b|^2 + Tr(Sa) + Tr(Sb) - 2 Tr((Sa Sb)^1/2) against a reference that takes the trace of the
    square root as the sum of sqrt(eigenvalues of Sa^1/2 Sb Sa^1/2) (symmetric eigen-decompositions, no
    sqrtm), on samples with strongly correlated, non-diagonal covariances, to 1e-6 relative. Seen failing on:
    Tr(Sa^1/2 Sb^1/2) (right only for commuting covariances), a missing factor 2."""
    import numpy as np

    from sassl.eval.tsne import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 1.0
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) - 0.5
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    corr = sa / np.sqrt(np.outer(np.diag(sa), np.diag(sa)))
    assert np.abs(corr - np.eye(5)).max() > 0.5  # really correlated
    w, v = np.linalg.eigh(sa)
    half = v @ np.diag(np.sqrt(w)) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(half @ sb @ half), 0, None)).sum()
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- DDP: a whole step

def _ddp_step_worker(rank, world, store, out):
    import collectives

    trace = collectives.join(rank, world, store)
    try:
        for name in DDP_LEARNERS:
            model = _bn_eval(_tiny(name))
            _two_steps(torch.nn.parallel.DistributedDataParallel(model), model, rank, world)
            if rank == 0:
                torch.save(model.state_dict(), f"{out}.{name}")
    finally:
        collectives.leave(trace, f"{out}.trace", rank)


DDP_LEARNERS = ("mocov3", "mocov2-queue")


def _two_steps(step_model, model, rank: int, world: int) -> None:
    """Two train_steps on images 8 // world * rank onwards of two batches of 8 (all of them for world 1), each
    half's draws from its own generator, so that one process sees exactly what the two ranks see."""
    from sassl.training.step import prepare_batch, train_step
    from sassl.views import VIEWS, TwoViews

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    views = TwoViews(VIEWS["byol"])
    c1, c2 = _views(8)
    for step in range(2):
        halves = [prepare_batch(views, c1[r * 4:(r + 1) * 4], c2[r * 4:(r + 1) * 4],
                                torch.Generator().manual_seed(step * 10 + r))[0] for r in range(2)]
        mine = _cat(halves) if world == 1 else halves[rank]
        train_step(step_model, views, opt, [mine], 0.05, 0.9)


def _cat(objs):
    """Dataclasses (Prepared, ViewParams) of two half batches as one of the whole batch."""
    import dataclasses

    vals = {}
    for f in dataclasses.fields(objs[0]):
        v = getattr(objs[0], f.name)
        vals[f.name] = torch.cat([getattr(o, f.name) for o in objs]) if isinstance(v, torch.Tensor) else \
            _cat([getattr(o, f.name) for o in objs]) if dataclasses.is_dataclass(v) else v
    return type(objs[0])(**vals)


def _bn_eval(model):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()  # per-rank batch statistics would differ from one process's (SyncBN is CUDA-only)
    return model


@pytest.mark.slow
def test_two_ddp_steps_equal_one_process(tmp_path):
    """MoCo v3 and classic MoCo v2 (queue): two full train_steps (views, learner, EMA, queue, SGD) on 2 gloo
    ranks, each with half of each batch, end with the weights, target and queue of one process taking the
    whole batches. Seen failing on: keys not gathered (each rank contrasting its own half), the queue filled
    with one rank's keys."""
    import torch.multiprocessing as mp

    import collectives

    out = tmp_path / "state"
    mp.spawn(_ddp_step_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    for name in DDP_LEARNERS:
        model = _bn_eval(_tiny(name))
        _two_steps(model, model, 0, 1)
        got = torch.load(f"{out}.{name}", weights_only=True)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=f"{name} {k}")
    collectives.check(f"{out}.trace", 2)


def test_knn_accuracy_defaults_are_k_20_and_t_007():
    """knn_accuracy's defaults, as every caller without arguments gets them: 20 neighbours at T = 0.07. Ten
    class-0 and ten class-1 points at cosine 0.9 tie within the 20 nearest (the first class wins a tie); a 21st,
    class 1 at cosine 0.1, breaks the tie only when k is 21 or more. The temperature: the first query of
    test_knn_votes_are_cosine_weighted_at_t_007 again, through knn_accuracy."""
    from sassl.eval.knn import knn_accuracy

    dim = 23
    q = torch.zeros(1, dim)
    q[0, 0] = 1.0
    pts = []
    for j in range(21):
        c = 0.9 if j < 20 else 0.1
        v = torch.zeros(dim)
        v[0], v[j + 1] = c, math.sqrt(1 - c * c)
        pts.append(v)
    labels = torch.tensor([0] * 10 + [1] * 10 + [1])
    assert knn_accuracy(torch.stack(pts), labels, q, torch.tensor([0]), 2) == 1.0
    assert knn_accuracy(torch.stack(pts), labels, q, torch.tensor([0]), 2, k=21) == 0.0
    at = lambda c: math.sqrt(1 - c * c)  # noqa: E731
    train = torch.stack([_unit(0.80, at(0.80), 0, 0, 0), _unit(0.80, 0, at(0.80), 0, 0), _unit(0.86, 0, 0, at(0.86), 0)])
    assert knn_accuracy(train, torch.tensor([0, 0, 1]), _unit(1, 0, 0, 0, 0)[None], torch.tensor([1]), 3) == 1.0


def layout(m):
    """Each layer of a Sequential head: (type, in, out, bias for a Linear / affine for a BatchNorm)."""
    return [(type(x).__name__, getattr(x, "in_features", None), getattr(x, "out_features", None),
             getattr(x, "bias", None) is not None if isinstance(x, torch.nn.Linear) else getattr(x, "affine", None))
            for x in m]


def test_head_layouts_written_out():
    """BYOL's 2-layer MLP: Linear (no bias) -> BN -> ReLU -> Linear (bias); MoCo v3's 3-layer projector: every
    Linear without bias, BN after each, the last BN without affine parameters. The target tower's copy is
    frozen. Seen failing on: an extra hidden layer, biases before BN, an affine last BN, a trainable copy."""
    from sassl.learners.heads import mlp
    from sassl.learners.momentum import frozen_copy

    assert layout(mlp(8, 16, 4)) == [("Linear", 8, 16, False), ("BatchNorm1d", None, None, True),
                                     ("ReLU", None, None, None), ("Linear", 16, 4, True)]
    assert layout(mlp(8, 16, 4, last_bn=True, num_layers=3)) == [
        ("Linear", 8, 16, False), ("BatchNorm1d", None, None, True), ("ReLU", None, None, None),
        ("Linear", 16, 16, False), ("BatchNorm1d", None, None, True), ("ReLU", None, None, None),
        ("Linear", 16, 4, False), ("BatchNorm1d", None, None, False)]
    assert layout(mlp(8, 16, 4, num_layers=1)) == [("Linear", 8, 4, True)]
    copy = frozen_copy(mlp(8, 16, 4))
    assert not any(p.requires_grad for p in copy.parameters())


def test_mocov3_heads_follow_its_paper():
    """MoCo v3: the projector ends in an affine-free BN (3 layers for a ViT, 2 for a ResNet); the predictor has
    2 layers, with the last BN only for a ViT; SimCLR refuses a target view. Seen failing on: the ResNet's
    layout for the ViT, a predictor without its ViT BN, a projector without the last BN."""
    from sassl.learners import create_learner

    def heads(backbone, small):
        m = create_learner("mocov3", backbone, small, image_size=32, proj_hidden=16, proj_dim=8, pred_hidden=12)
        return layout(m.projector), layout(m.predictor), m.temperature

    proj, pred, t = heads("resnet18", True)
    assert t == 0.2 and [x[0] for x in proj] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert proj[0][1:] == (512, 16, False) and proj[-1] == ("BatchNorm1d", None, None, False)
    assert pred == [("Linear", 8, 12, False), ("BatchNorm1d", None, None, True), ("ReLU", None, None, None),
                    ("Linear", 12, 8, True)]
    proj, pred, _ = heads("vit_tiny", False)
    assert [x[0] for x in proj] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert proj[-1] == ("BatchNorm1d", None, None, False) and pred[-1] == ("BatchNorm1d", None, None, False)
    with pytest.raises(ValueError, match="SimCLR has one tower: x1_target"):
        _tiny("simclr")(*_views(), None, torch.rand(6, 3, 32, 32))


def test_sassl_params_as_plain_values(stylizer):
    """What the explorer shows and a log records of one draw: the source, the roll offset, apply, alpha and beta
    rounded to 4 decimals, the style rows. Written out for a batch of 3 at offset 2."""
    from sassl.stylizer import SASSL

    prm = SASSL(stylizer, source="batch", batch_offset=2, alpha=(0.1, 0.1), beta=(0.25, 0.25)).sample(
        3, torch.Generator().manual_seed(0))
    d = prm.to_dict()
    assert d == {"source": "batch", "offset": 2, "apply": prm.apply.tolist(), "alpha": [0.1, 0.1, 0.1],
                 "beta": [0.25, 0.25, 0.25], "style_index": [2, 0, 1]}
    prm.alpha[:] = torch.tensor([0.123456, 0.2, 0.3])
    prm.beta[:] = torch.tensor([0.654321, 0.2, 0.3])
    assert prm.to_dict()["alpha"] == [0.1235, 0.2, 0.3] and prm.to_dict()["beta"] == [0.6543, 0.2, 0.3]


def test_sassl_style_indices_and_offsets_per_source(stylizer):
    """Per source: 'batch' rolls by an offset drawn from 1..N-1 by the generator (never 0: an image would be
    its own style), works from N = 2; 'content' is its own style; 'noise' draws z ~ N(0, 1) with index -1;
    a bank is a buffer left out of the state dict. Seen failing on: offsets from 2, N >= 3 required, content
    treated as noise, noise std 2."""
    from sassl.stylizer import SASSL

    op = SASSL(stylizer, source="batch")
    offsets = {op.sample(5, torch.Generator().manual_seed(s)).offset for s in range(200)}
    assert offsets == {1, 2, 3, 4}
    assert op.sample(5, torch.Generator().manual_seed(7)).offset == op.sample(5, torch.Generator().manual_seed(7)).offset
    two = op.sample(2, torch.Generator().manual_seed(0))
    assert two.offset == 1 and two.style_index.tolist() == [1, 0]
    with pytest.raises(ValueError, match="at least 2 images"):
        op.sample(1)
    assert SASSL(stylizer, source="content").sample(4).style_index.tolist() == [0, 1, 2, 3]
    noise = SASSL(stylizer, source="noise").sample(20_000, torch.Generator().manual_seed(0))
    assert noise.style_index.tolist() == [-1] * 20_000 and noise.style_index.dtype == torch.long
    assert abs(float(noise.noise.std()) - 1.0) < 0.01 and noise.noise.shape == (20_000, 100)
    again = SASSL(stylizer, source="noise").sample(20_000, torch.Generator().manual_seed(0))
    assert torch.equal(again.noise, noise.noise)  # drawn from the step's generator: a resumed run redraws them
    with pytest.raises(ValueError, match="noise_std: must be > 0, got 0"):
        SASSL(stylizer, source="noise", noise_std=0)
    banked = SASSL(stylizer, source="bank", bank=torch.randn(3, 100))
    assert "bank" not in banked.state_dict() and banked.bank.shape == (3, 100)
    assert SASSL(stylizer, source="batch").bank is None
    with pytest.raises(ValueError, match="bank: source='bank' needs a StyleBank"):
        SASSL(stylizer, source="bank")


def test_view_draws_follow_byols_table():
    """BYOL's view parameters (Grill et al. 2020, table 6), over 50,000 draws per view: brightness and contrast
    factors in [0.6, 1.4], saturation in [0.8, 1.2], hue shifts in [-0.1, 0.1] (extremes within 2e-3 of the
    bounds), sigma in [0.1, 2.0]; rates flip 0.5, jitter 0.8, gray 0.2, blur 1.0 / 0.1, solarize 0 / 0.2
    (within 4 standard errors); each image's jitter order a permutation. Seen failing on: the range
    (1 - b, 1 - b), hue in [0.1, 0.1], lo + (hi + lo) u."""
    from sassl.views import VIEWS, TwoViews

    views, n = TwoViews(VIEWS["byol"]), 50_000
    bounds = [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]
    for view, blur, solarize in ((0, 1.0, 0.0), (1, 0.1, 0.2)):
        p = views.sample(n, view, torch.Generator().manual_seed(view))
        for col, (lo, hi) in enumerate(bounds):
            f = p.factors[:, col]
            assert lo <= float(f.min()) < lo + 2e-3 and hi - 2e-3 < float(f.max()) <= hi, (view, col)
        assert 0.1 <= float(p.sigma.min()) < 0.102 and 1.998 < float(p.sigma.max()) <= 2.0
        for rate, want in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2), (p.blur, blur), (p.solarize, solarize)):
            assert abs(float(rate.float().mean()) - want) <= 4 * math.sqrt(want * (1 - want) / n) + 1e-9, (view, want)
        assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))


def test_learner_and_schedule_defaults():
    """The defaults a caller gets without arguments: a ResNet-18 with the small-image stem at 224 px, and the
    momentum schedule from 0.99."""
    from sassl.learners import cosine_momentum, create_learner

    m = create_learner("simclr", proj_hidden=8, proj_dim=4)
    assert type(m.backbone).__name__ == "ResNet" and len(m.backbone.layer1) == 2  # ResNet-18: 2 blocks a stage
    assert m.backbone.conv1.kernel_size == (3, 3)
    assert cosine_momentum(0, 10) == pytest.approx(0.99)
    vit = create_learner("simclr", "vit_tiny", small_images=False, proj_hidden=8, proj_dim=4)
    assert vit.backbone.image_size == 224


def test_knn_monitor_subsets_and_score(jpeg_folder):
    """The trainer's kNN monitor: train and test subsets drawn with seeds `seed` and `seed + 1` (all images by
    default), features at the run's image size, Wu et al.'s vote with the monitor's k, reported in percent
    to 2 decimals. The reference votes with loops (float64) over features of exactly the expected subsets.
    Seen failing on: both subsets from one seed, k ignored (default 20 used), a score in 0..1, the test set's
    classes counted from the wrong split, max_test applied to the train set."""
    from sassl.data import get_dataset
    from sassl.eval.features import stream_features
    from sassl.eval.knn import KnnMonitor, bounded_subset

    train, test = get_dataset(f"imagefolder:{jpeg_folder}"), get_dataset(f"imagefolder:{jpeg_folder}@val")
    n, m = len(train), len(test)
    # bounded_subset: everything when the limit is 0 or not below n, else `limit` distinct sorted indices,
    # the same for the same seed and another set for another seed
    assert bounded_subset(n, 0, 5) == bounded_subset(n, n, 5) == bounded_subset(n, n + 9, 5) == list(range(n))
    sub = bounded_subset(n, 30, 5)
    assert len(set(sub)) == 30 and sub == sorted(sub) and all(0 <= i < n for i in sub)
    assert sub == bounded_subset(n, 30, 5) != bounded_subset(n, 30, 6)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten())
    whole = KnnMonitor(train, test, 24, num_workers=0)
    assert whole.k == 20 and whole.train_idx == list(range(n)) and whole.test_idx == list(range(m))
    mon = KnnMonitor(train, test, 40, k=3, max_train=60, max_test=20, seed=7, num_workers=0)
    assert mon.train_idx == bounded_subset(n, 60, 7) and mon.test_idx == bounded_subset(m, 20, 8)
    for monitor, size, k in ((whole, 24, 20), (mon, 40, 3)):
        tr_f, tr_y = stream_features(net, train, monitor.train_idx, size, num_workers=0)
        te_f, te_y = stream_features(net, test, monitor.test_idx, size, num_workers=0)
        want = naive_weighted_knn_top1(tr_f, tr_y, te_f, te_y, len(train.classes), k)
        got = monitor(net)
        assert got == round(want, 2), (size, k, got, want)
        assert 100 / len(te_y) < want < 100  # the reference neither fails every image nor gets all right


def test_losses_on_unnormalised_rows_as_rank_1_of_2_with_their_default_temperature():
    """The losses as pure functions, as rank 1 of 2 sees them: rows of very different lengths (each must be
    normalised on its own), keys and candidates of both ranks, a queue, and no temperature given (0.1).
    References by loops. Seen failing on: normalising the whole matrix instead of each row (queries, keys,
    queue, anchors, candidates), the positive at i - rank B, the local batch used instead of the gathered one,
    temperature default 1.1."""
    from sassl.learners.losses import byol_loss, info_nce, nt_xent

    g = torch.Generator().manual_seed(3)
    b, d = 4, 8
    lengths = torch.tensor([0.2, 1.0, 3.0, 7.0])[:, None]
    q = torch.randn(b, d, generator=g) * lengths
    keys = torch.randn(2 * b, d, generator=g) * torch.cat([lengths.flip(0), lengths])
    queue = torch.randn(5, d, generator=g) * torch.linspace(0.3, 4.0, 5)[:, None]
    assert info_nce(q, keys, rank=1).item() == pytest.approx(naive_info_nce(q, keys, 0.1, rank=1).item(), rel=1e-5)
    assert info_nce(q, keys, queue=queue, rank=1).item() == pytest.approx(
        naive_info_nce(q, keys, 0.1, queue, rank=1).item(), rel=1e-5)
    z1_all = torch.randn(2 * b, d, generator=g) * torch.cat([lengths, lengths.flip(0)])
    z2_all = torch.randn(2 * b, d, generator=g) * torch.cat([lengths.flip(0), lengths])
    z1, z2 = z1_all[b:], z2_all[b:]  # this rank's rows of the gathered batch
    assert nt_xent(z1, z2, z1_all=z1_all, z2_all=z2_all, rank=1).item() == pytest.approx(
        naive_nt_xent_of_rank(z1, z2, z1_all, z2_all, 1, 0.1).item(), rel=1e-5)
    assert nt_xent(z1, z2).item() == pytest.approx(naive_nt_xent(z1, z2, 0.1).item(), rel=1e-5)
    z1r0, z2r0 = z1_all[:b], z2_all[:b]  # rank 0 of 2: its self-similarities are not the last columns
    assert nt_xent(z1r0, z2r0, z1_all=z1_all, z2_all=z2_all).item() == pytest.approx(
        naive_nt_xent_of_rank(z1r0, z2r0, z1_all, z2_all, 0, 0.1).item(), rel=1e-5)
    want = sum(2 - 2 * float(F.cosine_similarity(p.double(), z.double(), dim=0)) for p, z in zip(q, keys[:b])) / b
    assert byol_loss(q, keys[:b]).item() == pytest.approx(want, rel=1e-5)


def test_knn_edge_cases_row_norms_and_defaults(jpeg_folder):
    """knn_predict: an empty train or test set is an error, one train point is enough; every query and train
    row is normalised on its own (a batch of queries of different lengths predicts as each alone; a long
    train vector at a lower cosine loses to a short one at a higher cosine); k defaults to 20; knn_accuracy
    passes its temperature on. The monitor's subsets default to seeds 0 and 1. Seen failing on: 'and' for
    'or' in the empty check, normalising whole matrices, the temperature dropped, seed default 1."""
    from sassl.data import get_dataset
    from sassl.eval.knn import KnnMonitor, bounded_subset, knn_accuracy, knn_predict

    one = torch.ones(1, 3)
    with pytest.raises(ValueError, match="empty train or test"):
        knn_predict(one[:0], torch.zeros(0, dtype=torch.long), one, 2)
    with pytest.raises(ValueError, match="empty train or test"):
        knn_predict(one, torch.zeros(1, dtype=torch.long), one[:0], 2)
    assert knn_predict(one, torch.tensor([1]), torch.ones(2, 3), 2).tolist() == [1, 1]
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_predict(one, torch.tensor([1]), one, 2, k=0)

    at = lambda c: math.sqrt(1 - c * c)  # noqa: E731
    train = torch.stack([_unit(0.80, at(0.80), 0, 0, 0), _unit(0.80, 0, at(0.80), 0, 0), _unit(0.86, 0, 0, at(0.86), 0)])
    labels = torch.tensor([0, 0, 1])
    q1, q2 = _unit(1, 0, 0, 0, 0), _unit(0, 0, 0, 0, 1)
    alone = [knn_predict(train, labels, q[None], 3, k=3).item() for q in (q1, 30 * q2)]
    assert knn_predict(train, labels, torch.stack([q1, 30 * q2]), 3, k=3).tolist() == alone and alone[0] == 1
    near_short = torch.stack([0.1 * _unit(0.9, at(0.9), 0, 0, 0), 5 * _unit(0.8, 0, at(0.8), 0, 0)])
    assert knn_predict(near_short, torch.tensor([0, 1]), q1[None], 2, k=1).tolist() == [0]
    assert knn_accuracy(train, labels, q1[None], torch.tensor([1]), 3, k=3, temperature=0.1) == 0.0

    dim = 23
    pts = []
    for j in range(21):  # as test_knn_accuracy_defaults_are_k_20_and_t_007: the 21st neighbour breaks a tie
        c = 0.9 if j < 20 else 0.1
        v = torch.zeros(dim)
        v[0], v[j + 1] = c, at(c)
        pts.append(v)
    q = torch.zeros(1, dim)
    q[0, 0] = 1.0
    assert knn_predict(torch.stack(pts), torch.tensor([0] * 10 + [1] * 11), q, 2).tolist() == [0]

    tr, te = get_dataset(f"imagefolder:{jpeg_folder}"), get_dataset(f"imagefolder:{jpeg_folder}@val")
    mon = KnnMonitor(tr, te, 24, max_train=30, max_test=10)
    assert mon.train_idx == bounded_subset(len(tr), 30, 0) and mon.test_idx == bounded_subset(len(te), 10, 1)
    # small batches: more than two of them, so the monitor's loader settings reach the DataLoader
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    small = KnnMonitor(tr, te, 24, k=3, max_train=40, max_test=12, batch_size=4, num_workers=0)
    whole = KnnMonitor(tr, te, 24, k=3, max_train=40, max_test=12, num_workers=0)
    assert small(net) == whole(net)


# ----------------------------------------------------------------------------- the linear probe, written out


def test_linear_probe_against_a_hand_written_one(monkeypatch):
    """train_linear with its defaults (100 epochs, lr 0.1, batch 256, seed 0) and with other settings (several
    batches per epoch) gives the hand-written probe's logits; features far from 0 with small spread (the
    standardisation must subtract the mean and divide by the std, accumulated in float64 over chunks).
    Seen failing on: (x - mean) * std, + mean, the standardisation left out of the returned model, weights
    N(1, 0.01) or N(0, 1.01), the permutation or the init not from the seeded generator, lr default 1.1."""
    from sassl.eval import linear
    from sassl.eval.linear import linear_probe, predict, train_linear

    g = torch.Generator().manual_seed(11)
    centres = torch.randn(3, 6, generator=g)
    y = torch.arange(300) % 3  # more than one default batch (256) per epoch
    x = 50.0 + centres[y] * 0.2 + 0.3 * torch.randn(300, 6, generator=g)
    yt = torch.arange(15) % 3
    test = 50.0 + centres[yt] * 0.2 + 0.3 * torch.randn(15, 6, generator=g)
    got = predict(train_linear(x, y, 3), test)
    want = naive_probe_logits(x, y, test, 3)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    got = predict(train_linear(x, y, 3, epochs=7, lr=0.05, batch_size=16, seed=5), test)
    want = naive_probe_logits(x, y, test, 3, epochs=7, lr=0.05, batch_size=16, seed=5)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    seen = []
    real = linear.train_linear
    monkeypatch.setattr(linear, "train_linear", lambda *a: seen.append(a[3:]) or real(*a))
    res = linear_probe(x, y, test, yt, 3)  # its defaults are train_linear's
    assert seen == [(100, 0.1, 256, 0, None)]
    pred = naive_probe_logits(x, y, test, 3).argmax(1)
    assert res["top1"] == pytest.approx(100 * (pred == yt).double().mean().item()) and res["top5"] is None


def test_feature_stats_and_scores_written_out():
    """feature_stats: the population mean and std (+ 1e-6) of features near 1000 with spread 0.01, summed in
    float64 over chunks (float32 sums lose the spread); a constant column has std 1e-6. scores: top-1, and
    top-5 only from 10 classes up. Seen failing on: float32 accumulation, '=' for '+=' over chunks, the
    clamp at 1, 6 for 5, top-5 from 11 classes."""
    from sassl.eval.linear import feature_stats, scores

    g = torch.Generator().manual_seed(2)
    x = torch.cat([1000 + 0.01 * torch.randn(10, 2, generator=g), torch.full((10, 1), 3.0)], dim=1)
    mean, std = feature_stats(x, chunk=4)
    xd = x.double()
    torch.testing.assert_close(mean.double(), xd.mean(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(std[:2].double(), xd[:, :2].var(0, unbiased=False).sqrt() + 1e-6, rtol=1e-3, atol=0)
    assert std[2].item() == pytest.approx(1e-6, rel=1e-3)

    logits = torch.tensor([[float(c == k) * 10 + c for c in range(10)] for k in range(4)])  # row k: class k first
    labels = torch.tensor([0, 9, 8, 3])  # row 1: label 9 is 2nd, row 2: label 8 is 3rd -> top-5
    s = scores(logits, labels)
    assert s == {"top1": 50.0, "top5": 100.0}
    labels6 = torch.tensor([0, 5, 5, 3])  # label 5 is 6th in rows 1 and 2 (after k, 9, 8, 7, 6)
    assert scores(logits, labels6)["top5"] == 50.0
    assert scores(logits[:, :9], labels.clamp(max=8))["top5"] is None
    from sassl.eval.linear import train_linear

    with pytest.raises(ValueError, match="linear probe: no training features"):
        train_linear(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 2)


def test_few_shot_episodes_against_a_hand_written_one():
    """Episode e of seed s: one generator seeded s + e draws `shots` images per class, classes in ascending
    order, from the train side only; a linear probe (lr 0.1, one batch of the support set, seed s + e, the
    given epochs) on them is scored on the whole test side. Seen failing on: every episode drawing with seed
    s, one generator per class, test images in the support set, the probe at another batch size."""
    from sassl.eval.fewshot import few_shot

    g = torch.Generator().manual_seed(21)
    centres = torch.randn(3, 5, generator=g)  # overlapping classes: the score depends on which images are drawn
    y = torch.arange(30) % 3
    x = centres[y] + torch.randn(30, 5, generator=g)
    yt = torch.arange(300) % 3
    test = centres[yt] + torch.randn(300, 5, generator=g)
    got = few_shot(x, y, test, yt, 3, shots=2, episodes=3, seed=7, epochs=5)
    assert len({r["top1"] for r in got}) == 3  # the episodes differ
    for e, row in enumerate(got):
        gen = torch.Generator().manual_seed(7 + e)
        idx = []
        for c in range(3):
            members = [i for i in range(30) if int(y[i]) == c]
            idx += [members[j] for j in torch.randperm(len(members), generator=gen)[:2].tolist()]
        idx = torch.tensor(idx)
        logits = naive_probe_logits(x[idx], y[idx], test, 3, epochs=5, lr=0.1, batch_size=len(idx), seed=7 + e)
        assert row["episode"] == e and row["episode_seed"] == 7 + e
        assert row["top1"] == pytest.approx(100 * (logits.argmax(1) == yt).double().mean().item())

