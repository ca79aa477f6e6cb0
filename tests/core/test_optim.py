"""LARS, the parameter groups, the cosine schedule and the per-rank epoch sampler against hand computations."""
import pytest
import torch
import torch.nn as nn

import sassl.dist
from sassl.optim import LARS, cosine_lr, param_groups
from sassl.data.loader import EpochSampler


def test_lars_two_steps_match_hand_computation():
    """By hand: lr_local = trust*||w||/||g + wd*w||, buf = g_local (then 0.9 buf + g_local), w -= lr * buf; bias plain SGD."""
    w, b = nn.Parameter(torch.tensor([3.0, 4.0])), nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.5, "exclude": False},
                {"params": [b], "weight_decay": 0.0, "exclude": True}], lr=2.0, momentum=0.9, trust=0.1)
    # step 1: g + wd*w = [1.5, 2] + [1.5, 2] = [3, 4]; lr_local = 0.1 * 5 / 5 = 0.1; buf = [0.3, 0.4]
    w.grad, b.grad = torch.tensor([1.5, 2.0]), torch.tensor([0.5])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3 - 2 * 0.3, 4 - 2 * 0.4]))  # [2.4, 3.2], ||w|| = 4
    torch.testing.assert_close(b.detach(), torch.tensor([1 - 2 * 0.5]))  # no decay, no scaling: buf = g
    # step 2: g + wd*w = [1.2, 1.6] + [1.2, 1.6] = [2.4, 3.2]; lr_local = 0.1 * 4 / 4 = 0.1 -> [0.24, 0.32]
    w.grad, b.grad = torch.tensor([1.2, 1.6]), torch.tensor([0.25])
    opt.step()
    buf = [0.9 * 0.3 + 0.24, 0.9 * 0.4 + 0.32]  # [0.51, 0.68]
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], torch.tensor(buf))
    torch.testing.assert_close(w.detach(), torch.tensor([2.4 - 2 * buf[0], 3.2 - 2 * buf[1]]))
    torch.testing.assert_close(b.detach(), torch.tensor([0.0 - 2 * (0.9 * 0.5 + 0.25)]))


def test_param_groups_split_weights_from_biases_and_norms():
    """Conv/linear weights are decayed; every bias and BatchNorm/LayerNorm/GroupNorm parameter is exempt (wd 0)."""
    conv, lin = nn.Conv2d(3, 4, 3), nn.Linear(4, 6)
    bn, ln, gn = nn.BatchNorm2d(4), nn.LayerNorm(6), nn.GroupNorm(2, 6)
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin, ln, gn)
    decay, exempt = param_groups(model, weight_decay=1e-4)
    assert (decay["weight_decay"], decay["exclude"], exempt["weight_decay"], exempt["exclude"]) == (1e-4, False, 0.0, True)
    ids = lambda ps: [id(p) for p in ps]
    assert sorted(ids(decay["params"])) == sorted(ids([conv.weight, lin.weight]))
    norms = [p for m in (bn, ln, gn) for p in (m.weight, m.bias)]
    assert sorted(ids(exempt["params"])) == sorted(ids([conv.bias, lin.bias] + norms))
    everything = ids(decay["params"]) + ids(exempt["params"])
    assert len(everything) == len(set(everything)) and set(everything) == set(ids(model.parameters()))


def test_cosine_lr_warmup_peak_half_and_zero():
    """Warm-up base*(step+1)/warmup; cosine base*(1+cos(pi*t))/2: base at t=0, base/2 at t=1/2, 0 at t>=1."""
    base, warmup, total = 0.4, 10, 110
    lr = lambda s: cosine_lr(s, total, warmup, base)
    assert lr(0) == pytest.approx(base / warmup)
    assert [lr(s) for s in range(warmup)] == pytest.approx([base * (s + 1) / warmup for s in range(warmup)])
    assert lr(warmup - 1) == pytest.approx(base) and lr(warmup) == pytest.approx(base)  # peak at the end of warm-up
    assert lr(warmup + (total - warmup) // 2) == pytest.approx(base / 2)
    assert lr(total) == pytest.approx(0.0, abs=1e-12) and lr(total + 50) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(0, total, 0, base) == pytest.approx(base)  # no warm-up: starts at the peak


def test_epoch_sampler_splits_global_batches_over_ranks(monkeypatch):
    """Reference: the single-process order (a permutation cut to 12 whole batches of 8); rank r takes batch[r::2]."""
    n, gb, seed, world = 103, 8, 3, 2
    one = EpochSampler(n, gb, seed)
    one.epoch = 4
    keys = list(one)
    assert {e for e, _ in keys} == {4}  # keys carry the epoch to the workers
    full = [i for _, i in keys]
    assert one.batches_per_epoch() == 12 and len(full) == len(one) == 96
    assert len(set(full)) == 96 and set(full) <= set(range(n))  # distinct indices of the dataset
    one.epoch = 5
    assert list(one) != full  # a new order each epoch
    monkeypatch.setattr(sassl.dist, "world_size", lambda: world)
    for skip in (0, 5):
        per_rank = []
        for r in range(world):
            monkeypatch.setattr(sassl.dist, "rank", lambda r=r: r)
            s = EpochSampler(n, gb, seed)
            s.epoch, s.skip_batches = 4, skip
            per_rank.append([i for _, i in s])
            assert len(s) == len(per_rank[-1]) == (12 - skip) * gb // world
        assert not set(per_rank[0]) & set(per_rank[1])
        assert set(per_rank[0]) | set(per_rank[1]) == set(full[skip * gb:])  # skip drops exactly the first k batches
        for k in range(12 - skip):  # each loader batch of gb/world per rank is a split of the same global batch
            batch = full[(skip + k) * gb:(skip + k + 1) * gb]
            assert [p[k * gb // world:(k + 1) * gb // world] for p in per_rank] == [batch[r::world] for r in range(world)]


def test_param_groups_count_a_shared_weight_once():
    """A weight tied between two modules appears once (LARS would otherwise update it twice)."""
    import torch.nn as nn

    from sassl.optim import param_groups

    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    groups = param_groups(nn.Sequential(a, b), 1e-6)
    assert [len(g["params"]) for g in groups] == [1, 0]


def test_lars_defaults_and_a_plain_parameter_list():
    """make_optimizer builds LARS(groups, lr, weight_decay) and relies on its defaults: momentum 0.9 and trust
    1e-3, written out here by one step on a plain parameter list (the defaults' weight decay 1e-6 applies)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([w], lr=1.0)
    assert (opt.defaults["momentum"], opt.defaults["trust"], opt.defaults["weight_decay"]) == (0.9, 1e-3, 1e-6)
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    g = torch.tensor([0.6, 0.8]) + 1e-6 * torch.tensor([3.0, 4.0])
    step1 = 1e-3 * 5.0 / float(g.norm()) * g  # trust * ||w|| / ||g + wd w||, times it
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - step1)
    w2 = w.detach().clone()
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    g2 = torch.tensor([0.6, 0.8]) + 1e-6 * w2
    buf = 0.9 * step1 + 1e-3 * float(w2.norm()) / float(g2.norm()) * g2
    torch.testing.assert_close(w.detach(), w2 - buf)


def test_cosine_lr_one_step_after_warmup():
    """With a single step after warm-up the schedule is at base, then at 0 (the division by max(1, ...))."""
    assert cosine_lr(10, 11, 10, 0.4) == pytest.approx(0.4)
    assert cosine_lr(11, 11, 10, 0.4) == pytest.approx(0.0, abs=1e-12)
