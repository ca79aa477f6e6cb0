"""The style space: style-predictor embeddings of several datasets, their t-SNE map, and how much
their distributions overlap (the paper's A.2 eyeballs t-SNE plots; here the overlap gets numbers).

    emb, labels, names = style_embeddings(["paintings", "objects", "textures"], per_dataset=200)
    fig = tsne_figure(emb, labels, names)          # interactive plotly scatter, hover = image path
    m = overlap_matrices(emb, labels)              # {"datasets", "frechet", "knn_overlap"}
    rank_sources(emb, labels, "objects")           # style sources ranked by closeness to a target
"""
from __future__ import annotations

import numpy as np
import torch

from sassl.stylizer import build_bank, load_bank, pretrained


def style_embeddings(sources: list[str], per_dataset: int = 200, image_size: int = 256, seed: int = 0,
                     device: str | torch.device | None = None, progress: bool = True):
    """(emb (N, 100) float32 numpy, labels (N,) source per row, names (N,) image path or id).
    Up to `per_dataset` images per source (folder, bank .pt file or dataset name), seeded."""
    if not sources:
        raise ValueError("style space: give at least one dataset")
    stylizer = None
    embs, labels, names = [], [], []
    for src in sources:
        if str(src).endswith(".pt"):
            stylizer = stylizer or pretrained(device)
            bank = load_bank(src, stylizer)  # refused when embedded by other predictor weights
            keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:per_dataset]
            e, n = bank.embeddings[keep], [bank.meta.get("names", [f"{src}[{i}]" for i in range(len(bank))])[i] for i in keep]
        else:
            stylizer = stylizer or pretrained(device)
            bank = build_bank(stylizer, src, image_size, progress=progress, sample=per_dataset, seed=seed)
            e, n = bank.embeddings, bank.meta["names"]
        embs.append(e.float().cpu().numpy())
        labels += [str(src)] * len(e)
        names += list(n)
    return np.concatenate(embs), np.array(labels), np.array(names)


def tsne(emb: np.ndarray, perplexity: float = 30.0, iterations: int = 1000, seed: int = 0,
         early_exaggeration: float = 12.0) -> np.ndarray:
    """(N, 2) t-SNE map with PCA initialisation (scikit-learn's Barnes-Hut t-SNE). Perplexity is capped
    below N (t-SNE needs perplexity < N). The paper's Figure: 2,048 iterations, up to 1,800 images per
    dataset (its perplexity and exaggeration are not stated; scikit-learn's defaults are 30 and 12)."""
    from sklearn.manifold import TSNE

    if len(emb) < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {len(emb)}")
    if perplexity <= 0 or iterations < 250 or early_exaggeration < 1:
        raise ValueError(f"t-SNE: perplexity must be > 0, iterations >= 250 and early_exaggeration >= 1, got "
                         f"{perplexity}, {iterations}, {early_exaggeration}")
    perp = min(perplexity, (len(emb) - 1) / 3)
    return TSNE(2, perplexity=perp, init="pca", max_iter=iterations, random_state=seed,
                early_exaggeration=early_exaggeration).fit_transform(emb)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to a (N, D) and b (M, D):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet distance: need at least 2 points per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise (as in the FID reference code)
        eps = 1e-6 * np.eye(len(s_a))
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """How mixed two point sets are: the mean, over all points of a and b pooled, of the share of the k
    nearest neighbours (Euclidean, self excluded) that come from the other set, divided by that share
    under perfect mixing. ~1: indistinguishable distributions; 0: fully separated."""
    x = np.concatenate([a, b]).astype(np.float64)
    src = np.r_[np.zeros(len(a)), np.ones(len(b))]
    n = len(x)
    if len(a) < 1 or len(b) < 1 or n < 3:
        raise ValueError("knn overlap: need points in both sets and 3 in all")
    k = min(k, n - 1)
    sq = (x ** 2).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    nn_idx = np.argsort(d, axis=1)[:, :k]
    other = (src[nn_idx] != src[:, None]).mean(1)
    expected = np.where(src == 0, len(b), len(a)) / (n - 1)
    return float((other / expected).mean())


def overlap_matrices(emb: np.ndarray, labels: np.ndarray, k: int = 10) -> dict:
    """Pairwise Fréchet distance and kNN overlap between the datasets in `labels`, as nested lists."""
    names = list(dict.fromkeys(labels.tolist()))
    sets = [emb[labels == n] for n in names]
    fd = [[0.0 if i == j else frechet_distance(sets[i], sets[j]) for j in range(len(names))] for i in range(len(names))]
    ko = [[1.0 if i == j else knn_overlap(sets[i], sets[j], k) for j in range(len(names))] for i in range(len(names))]
    return {"datasets": names, "frechet": fd, "knn_overlap": ko}


def style_distance(source: str, target: str, per_dataset: int = 100, seed: int = 0, device=None) -> float:
    """Fréchet distance between the style embeddings of a seeded sample of `source` and of `target` (dataset
    names, NAME@SPLIT, folders or bank .pt files)."""
    emb, labels, _ = style_embeddings([source, target], per_dataset, seed=seed, device=device, progress=False)
    if source == target:
        return 0.0
    return frechet_distance(emb[labels == source], emb[labels == target])


def rank_sources(emb: np.ndarray, labels: np.ndarray, target: str, k: int = 10) -> list[dict]:
    """The style sources in `labels` (all but `target`) ranked by how close their style embeddings lie to the
    target's (the paper's A.2: style invariance helps transfer when the styles resemble the target domain):
    rows {rank, source, frechet, knn_overlap, images}, closest (lowest Fréchet distance) first."""
    if target not in set(labels.tolist()):
        raise ValueError(f"style match: target {target!r} has no embeddings")
    t = emb[labels == target]
    rows = [{"source": name, "frechet": frechet_distance(emb[labels == name], t),
             "knn_overlap": knn_overlap(emb[labels == name], t, k), "images": int((labels == name).sum())}
            for name in dict.fromkeys(labels.tolist()) if name != target]
    if not rows:
        raise ValueError("style match: give at least one style source besides the target")
    rows.sort(key=lambda r: r["frechet"])
    return [{"rank": i + 1} | r for i, r in enumerate(rows)]


