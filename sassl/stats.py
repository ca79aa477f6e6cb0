"""Statistics of seeds and of seed pairs, one home for every caller (compare, evaluate, studies, experiments):
mean and sample sd, the paired difference with its t and bootstrap intervals, the minimum detectable effect,
and p-values adjusted over a family of rows.

Runs of two variants with the same seed share their init, data order, crops and augmentation draws (only
SASSL's own draws differ), so each seed is a pair: the paired statistics are of the per-seed differences."""
from __future__ import annotations

import math


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((x - m) ** 2 for x in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def paired_stats(a: list[float], b: list[float], n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05,
                 power: float = 0.8) -> dict:
    """b - a over pairs (a[i], b[i] share a seed). Returns n, the mean difference and its sd, the two-sided
    paired t-test p (None for fewer than 2 pairs or no spread), the (1 - alpha) interval of the mean
    difference from the t distribution (t_low, t_high: the test's own interval), a percentile bootstrap
    interval (ci_low, ci_high; pairs resampled, seeded), and the minimum detectable effect: the true mean
    difference that a paired t-test at `alpha` with these n pairs detects with probability `power`, for
    the observed sd of the differences (what a null result rules out).

    NOTE: read the t interval at a handful of seeds. The percentile bootstrap cannot reach beyond the
    observed differences, so it is too narrow there: a nominal 95% bootstrap interval covered the true mean
    difference in 51% of simulated normal experiments of 2 pairs, 74% of 3, 85% of 5 and 90% of 10, the t
    interval in 94-95.5% of each (docs/RESULTS.md, "Intervals at a handful of seeds")."""
    import numpy as np
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired_stats: {len(a)} values against {len(b)}; give one value per seed on each side")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n > 1 and np.ptp(d) <= 1e-9 * max(1.0, float(np.abs(d).max())):
        # the same difference on every seed, up to float rounding (accuracies are multiples of 100 / N, so equal
        # differences are common on small test sets): no spread, no test, rather than p ~ 1e-16 from the noise
        d = np.full(n, d.mean())
    out = {"n": n, "diff": float(d.mean()) if n else float("nan"), "sd": float(d.std(ddof=1)) if n > 1 else 0.0,
           "p": None, "t_low": None, "t_high": None, "ci_low": None, "ci_high": None, "mde": None}
    if n < 2:
        return out
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    if out["sd"] == 0:
        return out
    se, df = out["sd"] / math.sqrt(n), n - 1
    out["p"] = float(2 * stats.t.sf(abs(out["diff"]) / se, df))
    crit = stats.t.ppf(1 - alpha / 2, df)
    out["t_low"], out["t_high"] = out["diff"] - crit * se, out["diff"] + crit * se
    out["mde"] = min_detectable(out["sd"], n, alpha, power)
    return out


def min_detectable(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true mean difference that a two-sided paired t-test at `alpha` over n pairs detects with
    probability `power` when the differences' sd is `sd` (noncentral t). With the sd of the pairs so far and a
    larger n, it says what more seeds would detect."""
    from scipy import optimize, stats

    if n < 2 or sd <= 0:
        raise ValueError(f"min_detectable: needs n >= 2 pairs and sd > 0, got n={n}, sd={sd}")
    se, df = sd / math.sqrt(n), n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def power_at(delta: float) -> float:  # P(|T| > crit) with T noncentral t, noncentrality delta / se
        lower = float(stats.nct.cdf(-crit, df, delta / se))  # negligible, and NaN in scipy far in the tail
        return float(stats.nct.sf(crit, df, delta / se)) + (lower if math.isfinite(lower) else 0.0)

    hi = crit * se
    while power_at(hi) < power:  # power grows with the effect: bracket it
        hi *= 2
    return float(optimize.brentq(lambda x: power_at(x) - power, 0.0, hi))


def pairs_needed(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int | None:
    """The fewest pairs whose paired t-test at `alpha` detects a true mean difference `effect` with probability
    `power` when the differences' sd is `sd` (min_detectable(sd, n) <= |effect|); None beyond `most`."""
    if sd <= 0 or effect == 0:
        raise ValueError(f"pairs_needed: needs sd > 0 and an effect other than 0, got sd={sd}, effect={effect}")
    lo, hi = 2, 2
    while min_detectable(sd, hi, alpha, power) > abs(effect):  # detectable effects shrink as pairs grow
        if hi >= most:
            return None
        lo, hi = hi, min(2 * hi, most)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if min_detectable(sd, mid, alpha, power) > abs(effect) else (lo, mid)
    return lo


def adjust_pvalues(p: list[float | None], method: str = "holm") -> list[float | None]:
    """p-values adjusted for testing all rows at once: Holm's step-down (family-wise error) or Benjamini and
    Hochberg's (false discovery rate). None entries (no test) stay None and do not count."""
    if method not in ("holm", "bh"):
        raise ValueError(f"method: 'holm' or 'bh', got {method!r}")
    idx = sorted((i for i, v in enumerate(p) if v is not None), key=lambda i: p[i])
    m, out = len(idx), list(p)
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(idx):
            running = max(running, min(1.0, (m - rank) * p[i]))
            out[i] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = idx[rank]
            running = min(running, m * p[i] / (rank + 1))
            out[i] = min(1.0, running)
    return out


def correlation(x: list[float], y: list[float], alpha: float = 0.05) -> dict:
    """Pearson's r of paired values with its (1 - alpha) interval from Fisher's z (tanh(atanh r -+ z / sqrt(n - 3)),
    n >= 4) and the two-sided p of r = 0 (t with n - 2 degrees of freedom, n >= 3). {n, r, low, high, p}; None
    where n is too small or a side has no spread."""
    import numpy as np
    from scipy import stats

    if len(x) != len(y):
        raise ValueError(f"correlation: {len(x)} values against {len(y)}; give one y per x")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    out = {"n": n, "r": None, "low": None, "high": None, "p": None}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))
    out["r"] = r
    if abs(r) < 1:
        t = r * math.sqrt((n - 2) / (1 - r * r))
        out["p"] = float(2 * stats.t.sf(abs(t), n - 2))
    else:
        out["p"] = 0.0
    if n >= 4 and abs(r) < 1:
        half = stats.norm.ppf(1 - alpha / 2) / math.sqrt(n - 3)
        out["low"], out["high"] = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    return out


def correlation_text(c: dict, points: str = "points") -> str:
    """A `correlation` result in words: "Pearson r = -0.41 [-0.80, +0.19] (Fisher z 95%), p 0.172, over 12 points";
    "" where it has no r."""
    if c["r"] is None:
        return ""
    interval = "" if c["low"] is None else f" [{c['low']:+.2f}, {c['high']:+.2f}] (Fisher z 95%)"
    return f"Pearson r = {c['r']:+.2f}{interval}, p {c['p']:.3f}, over {c['n']} {points}"
