"""Naive references the tests hold the code against: the same quantities written the slow, obvious way (loops,
float64), never calling the code under test. One home for each, imported by every test that needs it."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.eval.features import EvalImages
from sassl.stylizer.networks import NUM_CIN_LAYERS


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, t: float, extra: torch.Tensor | None = None,
                   rank: int = 0) -> torch.Tensor:
    """Mean over i of -log(exp(cos(q_i, k_p) / t) / sum_j exp(cos(q_i, c_j) / t)), c = k then extra, p = i + rank B:
    one query at a time, in float64."""
    cands = (k if extra is None else torch.cat([k, extra])).double()
    cands = cands / cands.norm(dim=1, keepdim=True)
    total = 0.0
    for i, qi in enumerate(q.double()):
        sims = (cands @ (qi / qi.norm())).tolist()
        total += -(sims[i + rank * len(q)] / t - math.log(sum(math.exp(s / t) for s in sims)))
    return torch.tensor(total / len(q))


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's loss by loops: anchors z1 then z2; positive the other view; the 2B - 2 others negatives."""
    z = list(z1) + list(z2)
    b, total = len(z1), 0.0
    for a in range(2 * b):
        pos = a + b if a < b else a - b
        sims = {c: float(F.cosine_similarity(z[a], z[c], dim=0)) / t for c in range(2 * b) if c != a}
        total += -(sims[pos] - math.log(sum(math.exp(s) for s in sims.values())))
    return torch.tensor(total / (2 * b))


def naive_nt_xent_of_rank(z1, z2, z1_all, z2_all, rank: int, t: float) -> torch.Tensor:
    """NT-Xent of one rank's 2B anchors against all ranks' 2N candidates, by loops in float64: anchor z1[i]
    (global row g = i + rank B) has positive z2_all[g] and every candidate but z1_all[g] (itself) in its
    denominator; anchor z2[i] the same with the views swapped."""
    cands = [F.normalize(c.double(), dim=0) for c in list(z1_all) + list(z2_all)]
    b, n, total = len(z1), len(z1_all), 0.0
    for view, zs in enumerate((z1, z2)):
        for i, a in enumerate(zs):
            g = i + rank * b
            me, pos = (g, g + n) if view == 0 else (g + n, g)
            a = F.normalize(a.double(), dim=0)
            sims = {c: float(a @ cands[c]) / t for c in range(2 * n) if c != me}
            total += -(sims[pos] - math.log(sum(math.exp(v) for v in sims.values())))
    return torch.tensor(total / (2 * b))


def naive_finetune(backbone, dim, target, size, epochs, lr, batch_size, seed, augment=False, crop_fraction=1.0):
    """Fine-tuning by hand: the head drawn after seeding torch with `seed`, one permutation per epoch from a
    generator seeded `seed` cut into whole batches (the remainder dropped), cross-entropy on normalised
    images, SGD with Nesterov momentum 0.9 on every parameter and lr (1 + cos(pi t / T)) / 2 per step,
    T = epochs x max(1, n // batch_size)."""
    import copy
    import math

    from sassl.views import imagenet_normalize

    torch.manual_seed(seed)
    net = nn.Sequential(copy.deepcopy(backbone), nn.Linear(dim, target.num_classes)).train()
    g = torch.Generator().manual_seed(seed)
    n = len(target.train_y)
    size_b, total, t = min(batch_size, n), epochs * max(1, n // batch_size), 0
    params = list(net.parameters())
    bufs = [torch.zeros_like(p) for p in params]
    (ds, idx), = target.train
    for epoch in range(epochs):
        images = EvalImages(ds, idx, size, crop_fraction, seed * 100_003 + epoch if augment else None)
        perm = torch.randperm(n, generator=g).tolist()
        for s in range(0, n - size_b + 1, size_b):
            items = [images[i] for i in perm[s:s + size_b]]
            x = imagenet_normalize(torch.stack([im for im, _ in items]).float() / 255)
            y = torch.as_tensor([int(lab) for _, lab in items])
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), params)
            step_lr = lr * (1 + math.cos(math.pi * t / total)) / 2
            with torch.no_grad():
                for k, (p, gr) in enumerate(zip(params, grads)):
                    bufs[k] = 0.9 * bufs[k] + gr
                    p -= step_lr * (gr + 0.9 * bufs[k])
            t += 1
    return net.eval()


def naive_weighted_knn_top1(train_f, train_y, test_f, test_y, num_classes, k, t=0.07):
    """Top-1 (%) of Wu et al.'s kNN written out with loops over the test points, in float64."""
    train_n = F.normalize(train_f.double(), dim=1)
    hits = 0
    for f, y in zip(F.normalize(test_f.double(), dim=1), test_y.tolist()):
        sims = train_n @ f
        top = sims.argsort(descending=True)[:k]
        votes = [0.0] * num_classes
        for i in top.tolist():
            votes[int(train_y[i])] += math.exp(float(sims[i]) / t)
        hits += int(max(range(num_classes), key=votes.__getitem__) == y)
    return 100 * hits / len(test_y)


def naive_probe_logits(x, y, test, classes, epochs=100, lr=0.1, batch_size=256, seed=0):
    """The probe by hand: population mean / std of the train features (float64, + 1e-6), weights N(0, 0.01)
    then a permutation per epoch from one generator seeded `seed`, zero bias, cross-entropy on standardised
    features, SGD with Nesterov momentum 0.9 (buf = 0.9 buf + grad; step grad + 0.9 buf), lr cosine over
    every step: lr (1 + cos(pi t / T)) / 2."""
    g = torch.Generator().manual_seed(seed)
    xd = x.double()
    mean = xd.mean(0)
    std = (xd.var(0, unbiased=False).sqrt() + 1e-6)
    w = torch.empty(classes, x.shape[1]).normal_(0, 0.01, generator=g).double()
    b = torch.zeros(classes, dtype=torch.float64)
    bufs = [torch.zeros_like(w), torch.zeros_like(b)]
    n = len(x)
    total, t = epochs * math.ceil(n / batch_size), 0
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch_size):
            w.requires_grad_(True)
            b.requires_grad_(True)
            loss = F.cross_entropy(((xd[idx] - mean) / std) @ w.t() + b, y[idx])
            gw, gb = torch.autograd.grad(loss, [w, b])
            step_lr = lr * (1 + math.cos(math.pi * t / total)) / 2
            with torch.no_grad():
                for i, (p, grad) in enumerate(((w, gw), (b, gb))):
                    bufs[i] = 0.9 * bufs[i] + grad
                    p -= step_lr * (grad + 0.9 * bufs[i])
            w, b = w.detach(), b.detach()
            t += 1
    return ((test.double() - mean) / std) @ w.t() + b


def naive_cin(x, z, gamma, beta, eps):
    """Loop-per-channel reference: (x - mean) / sqrt(biased var + eps) * gamma(z) + beta(z)."""
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        g = gamma.weight @ z[n] + gamma.bias
        b = beta.weight @ z[n] + beta.bias
        for c in range(x.shape[1]):
            v = x[n, c]
            mean = v.sum() / v.numel()
            var = ((v - mean) ** 2).sum() / v.numel()
            out[n, c] = (v - mean) / math.sqrt(var + eps) * g[c] + b[c]
    return out


def naive_sassl(stylizer, x, z_style_rows, alpha, beta, layers=NUM_CIN_LAYERS):
    """One image at a time, straight from the paper's formulas."""
    out = []
    for i in range(len(x)):
        c = x[i:i + 1]
        zc = stylizer.embed(c)[0]
        z = alpha[i] * z_style_rows[i] + (1 - alpha[i]) * zc
        per_layer = torch.stack([z if l < layers else zc for l in range(NUM_CIN_LAYERS)])[None]
        s = stylizer.transformer(c, per_layer)
        out.append(beta[i] * s + (1 - beta[i]) * c)
    return torch.cat(out)


def naive_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> float:
    """Barlow Twins written out with loops in float64: standardise each dimension over the batch (biased
    variance + eps), the cross-correlation entry by entry, the diagonal pulled to 1 and the rest to 0."""
    a, b = z1.double(), z2.double()
    n, d = a.shape
    def std(z):
        out = torch.empty_like(z)
        for j in range(d):
            col = z[:, j]
            mu = sum(col.tolist()) / n
            var = sum((v - mu) ** 2 for v in col.tolist()) / n
            out[:, j] = (col - mu) / math.sqrt(var + eps)
        return out
    a, b = std(a), std(b)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i].item() * b[k, j].item() for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lambd * c ** 2
    return total


def naive_vicreg(z1: torch.Tensor, z2: torch.Tensor, sim: float, var: float, cov: float, eps: float = 1e-4) -> float:
    """VICReg written out with loops in float64: mean squared distance, each dimension's std hinge at 1 (unbiased
    variance), each view's squared off-diagonal covariances over D."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])
    inv = sum((a[k][j] - b[k][j]) ** 2 for k in range(n) for j in range(d)) / (n * d)
    def hinge(z):
        out = 0.0
        for j in range(d):
            mu = sum(z[k][j] for k in range(n)) / n
            v = sum((z[k][j] - mu) ** 2 for k in range(n)) / (n - 1)
            out += max(0.0, 1 - math.sqrt(v + eps))
        return out / d
    def offcov(z):
        mu = [sum(z[k][j] for k in range(n)) / n for j in range(d)]
        out = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum((z[k][i] - mu[i]) * (z[k][j] - mu[j]) for k in range(n)) / (n - 1)
                    out += c ** 2
        return out / d
    return sim * inv + var * (hinge(a) + hinge(b)) / 2 + cov * (offcov(a) + offcov(b))


def naive_rankme(z, eps=1e-7):
    """RankMe by the paper's formula, with numpy's SVD and a loop: exp(-sum p_k log p_k), p_k = s_k / ||s||_1 + eps."""
    s = np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)
    total = sum(float(v) for v in s)
    entropy = 0.0
    for v in s:
        p = float(v) / total + eps
        entropy -= p * math.log(p)
    return math.exp(entropy)


def naive_dino(student, teacher, center, student_temp, teacher_temp):
    """DINO's loss by loops in float64: for each image, teacher view i and student view j != i, the cross-entropy
    of softmax((t_i - center) / Tt) against softmax(s_j / Ts), averaged over images and pairs."""
    s, t, c = student.double(), teacher.double(), center.double()
    total, pairs = 0.0, 0
    for i in range(len(t)):
        for j in range(len(s)):
            if i == j:
                continue
            pairs += 1
            for b in range(s.shape[1]):
                q = torch.exp((t[i, b] - c) / teacher_temp)
                q = q / q.sum()
                logits = s[j, b] / student_temp
                log_p = logits - torch.log(torch.exp(logits - logits.max()).sum()) - logits.max()
                total -= float((q * log_p).sum())
    return total / (pairs * s.shape[1])
