import pytest
import torch
import torch.nn.functional as F

from sassl.learners import LEARNERS, cosine_momentum, create_learner
from sassl.learners.losses import byol_loss, info_nce, nt_xent


def naive_info_nce(q, k, t, queue=None, rank=0):
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        cands = [kj / kj.norm() for kj in k] + ([u / u.norm() for u in queue] if queue is not None else [])
        logits = torch.stack([qi @ c for c in cands]) / t
        total += -(logits[i + rank * len(q)] - torch.logsumexp(logits, 0))
    return total / len(q)


def naive_nt_xent(z1, z2, t):
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n, total = len(z1), 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        others = [b for b in range(2 * n) if b != a]
        logits = torch.stack([z[a] @ z[b] for b in others]) / t
        total += -(z[a] @ z[pos] / t - torch.logsumexp(logits, 0))
    return total / (2 * n)


def test_info_nce_matches_naive():
    torch.manual_seed(0)
    q, k, queue = torch.randn(6, 8), torch.randn(6, 8), torch.randn(10, 8)
    torch.testing.assert_close(info_nce(q, k, 0.1), naive_info_nce(q, k, 0.1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(info_nce(q, k, 0.2, queue), naive_info_nce(q, k, 0.2, queue), rtol=1e-5, atol=1e-5)
    k_all = torch.cat([torch.randn(6, 8), k])  # as rank 1 of 2 after gathering keys
    torch.testing.assert_close(info_nce(q, k_all, 0.1, rank=1), naive_info_nce(q, k_all, 0.1, rank=1), rtol=1e-5, atol=1e-5)


def test_nt_xent_matches_naive():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5), naive_nt_xent(z1, z2, 0.5), rtol=1e-5, atol=1e-5)
    # perfectly aligned, well separated views give a low loss
    e = F.one_hot(torch.arange(5), 7).float()
    assert nt_xent(e, e, 0.1) < 0.01


def test_byol_loss_matches_naive():
    torch.manual_seed(0)
    p, z = torch.randn(4, 6), torch.randn(4, 6)
    ref = sum(2 - 2 * (p[i] @ z[i]) / (p[i].norm() * z[i].norm()) for i in range(4)) / 4
    torch.testing.assert_close(byol_loss(p, z), ref)
    assert byol_loss(p, 3 * p).abs() < 1e-6


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learner_train_step(name):
    torch.manual_seed(0)
    heads = {"proj_hidden": 64, "proj_dim": 32, "pred_hidden": 64}  # a learner takes the settings it declares
    model = create_learner(name, "resnet18", small_images=True, **heads)
    x1, x2 = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    target = getattr(model, "target_backbone", None)
    before = [p.clone() for p in target.parameters()] if target is not None else None
    loss, logs = model(x1, x2, 0.9)
    assert torch.isfinite(loss) and not logs["loss"].requires_grad and float(logs["loss"]) == pytest.approx(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    if target is not None:
        assert all(p.grad is None for p in target.parameters())
        # the momentum update moved the target towards the online network (both start equal: unchanged)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, target.parameters()))
        with torch.no_grad():
            for p in model.backbone.parameters():
                p.add_(1.0)
        model(x1, x2, 0.9)
        assert not torch.equal(before[0], next(target.parameters()))


def test_moco_queue_fills_in_order():
    model = create_learner("mocov2-queue", "resnet18", proj_hidden=32, proj_dim=16, queue_size=10)
    x = torch.rand(3, 3, 32, 32)
    model(x, x, 0.99)
    assert int(model.queue_ptr) == 6  # two views of 3 keys
    model(x, x, 0.99)
    assert int(model.queue_ptr) == 2  # wrapped around


def test_unknown_learner_and_backbone():
    with pytest.raises(KeyError, match="available: mocov2, mocov2-queue, simclr, byol"):
        create_learner("dino")
    with pytest.raises(KeyError, match="unknown backbone"):
        create_learner("simclr", "vit")
