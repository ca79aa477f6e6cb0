"""Compare runs: every run under runs/ (or a list), grouped into variants that differ only by seed.

A variant is a run's config without name, seed and run-time settings; its label reads like
"mocov2 + SASSL(pbn)" or "mocov2 baseline", with any training setting that differs from the current
default for its learner after the learner ("mocov2 ema=0.9 baseline") and any non-default SASSL setting
appended, so runs of different budgets or settings are never pooled. Scores are the
pre-training kNN monitor, each evaluation summary (runs/<name>/eval/summary.json) and the style instruments
of the evaluation (robustness.json, shape_bias.json: instrument_rows).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from sassl.config import plain
from sassl.stats import adjust_pvalues, mean_std, paired_stats
from sassl.stylizer import DEFAULTS, STYLE_KEYWORDS
from sassl.training import PretrainConfig, config_from_dict

SASSL_DEFAULTS = plain(DEFAULTS)  # as config.json holds them (lists)
# settings that do not change what a run learns (or are the learner / SASSL part of the label)
NOT_VARIANT = {"name", "seed", "learner", "style", "amp", "sync_bn", *SASSL_DEFAULTS}


def _training_defaults(learner: str) -> dict:
    """The current default settings of a run of `learner` (its own layer included), without the non-variant ones."""
    skip = NOT_VARIANT | set(PretrainConfig.RESUME_FREE) - {"epochs", "max_steps"}
    try:
        resolved = asdict(config_from_dict({"learner": learner}))
    except ValueError:  # a learner that no longer exists: compare with the plain defaults
        resolved = asdict(PretrainConfig())
    return plain({k: v for k, v in resolved.items() if k not in skip})


def variant_label(cfg: dict) -> str:
    """"mocov2 + SASSL(pbn)", "simclr baseline", "mocov2 ema=0.9 + SASSL(batch) layers=4": the learner,
    training settings that differ from the current defaults for that learner, then the SASSL part."""
    norm = plain(cfg)
    learner = " ".join([cfg["learner"]] + [f"{k}={norm[k]}" for k, v in _training_defaults(cfg["learner"]).items()
                                           if k in norm and norm[k] != v])
    if cfg.get("style", "none") == "none":
        return f"{learner} baseline"
    extra = [f"{k}={norm[k]}" for k, v in SASSL_DEFAULTS.items() if norm.get(k, v) != v]
    return f"{learner} + SASSL({cfg['style']})" + (" " + " ".join(extra) if extra else "")


def variant_group(variant: str) -> str:
    """The learner-and-training-settings part of a label: "mocov2 epochs=8" for both
    "mocov2 epochs=8 baseline" and "mocov2 epochs=8 + SASSL(batch)"."""
    return variant.split(" + ")[0].removesuffix(" baseline")


def collect_runs(runs_dir: str | Path, names: list[str] | None = None) -> list[dict]:
    """One row per (run, target, protocol): run, variant, seed, style, target, protocol, top1 (the run's mean over
    its evaluation seeds). Runs without config.json are skipped; a named run that is missing raises."""
    runs_dir = Path(runs_dir)
    if names:
        missing = [n for n in names if not (runs_dir / n / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(f"runs {missing} have no config.json under {runs_dir}")
        folders = [runs_dir / n for n in names]
    else:
        folders = sorted(p.parent for p in runs_dir.glob("*/config.json"))
    rows = []
    for run in folders:
        cfg = json.loads((run / "config.json").read_text())
        if "learner" not in cfg:  # not a pre-training run (demo, evaluation of a baseline, ...)
            continue
        base = {"run": run.name, "variant": variant_label(cfg), "seed": cfg.get("seed", 0), "style": cfg.get("style", "none")}
        if (run / "metrics.json").is_file():
            m = json.loads((run / "metrics.json").read_text())
            if "knn_top1" in m:
                rows.append(base | {"target": cfg.get("dataset", "?"), "protocol": "knn (monitor)", "top1": m["knn_top1"]})
        if (run / "eval" / "summary.json").is_file():
            for r in json.loads((run / "eval" / "summary.json").read_text()):
                rows.append(base | {"target": r["target"], "protocol": r["protocol"], "top1": r["top1_mean"]})
        rows += [base | r for r in instrument_rows(run / "eval")]
    return rows


INSTRUMENTS = ("invariance ", "stage ", "style decodability", "content decodability", "shape bias ")


def is_instrument(protocol: str) -> bool:
    """Whether a collect_runs row's protocol is a style instrument (instrument_rows) rather than an accuracy."""
    return protocol.startswith(INSTRUMENTS)


def instrument_rows(eval_dir: str | Path) -> list[dict]:
    """An evaluation's style instruments (robustness.json, shape_bias.json) as rows {target, protocol, top1},
    each on a 0-100 scale so that every difference reads in points: cosines x 100 ("invariance beta=B",
    "invariance content", "stage layer1 style" / "... content"), chance-corrected decodability x 100 ("style
    decodability", "content decodability"), shape bias x 100 ("shape bias knn" / "... linear").

    A stage whose cosine equals the invariance protocol's for the same change (a ResNet's layer4, pooled, is
    its output features: the same measurement of the same seeded stylization) is left out, so that a
    correction across rows counts each measurement once."""
    eval_dir = Path(eval_dir)
    rows = []

    def add(r: dict, protocol: str, value) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            rows.append({"target": r["target"], "protocol": protocol, "top1": 100.0 * float(value)})

    def change_of(r: dict) -> str:
        return "content" if r.get("kind", "").startswith("content") else "style"
    rob = eval_dir / "robustness.json"
    robustness = json.loads(rob.read_text()) if rob.is_file() else []
    output = {(r["target"], change_of(r)): r["cos_mean"] for r in robustness  # the output features' cosines
              if r["protocol"] == "style_invariance" and r.get("beta") in (None, 1.0)}
    for r in robustness:
        change = change_of(r)
        if r["protocol"] == "style_invariance":
            add(r, "invariance content" if change == "content" else f"invariance beta={r['beta']}", r["cos_mean"])
        elif r["protocol"] == "stage_invariance":
            if output.get((r["target"], change)) != r["cos_mean"]:
                add(r, f"stage {r['stage']} {change}", r["cos_mean"])
        elif r["protocol"] == "style_decodability":
            add(r, "style decodability", r["style_decodability"])
            add(r, "content decodability", r["content_decodability"])
    bias = eval_dir / "shape_bias.json"
    for r in json.loads(bias.read_text()) if bias.is_file() else []:
        add(r, f"shape bias {r['head']}", r["shape_bias"])
    return rows


def compare_table(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (variant, target, protocol)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["target"], r["protocol"]), []).append(r)
    out = []
    for (variant, target, protocol), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        m, s = mean_std([r["top1"] for r in rs])
        out.append({"variant": variant, "target": target, "protocol": protocol, "seeds": len(rs),
                    "top1_mean": round(m, 2), "top1_std": round(s, 2), "runs": ", ".join(r["run"] for r in rs)})
    return out


def differences(rows: list[dict]) -> list[dict]:
    """SASSL variant minus the same learner's baseline, per (target, protocol): difference of means and
    Welch's t-test p-value over seeds (None with fewer than 2 seeds on a side)."""
    from scipy import stats

    by: dict[tuple, list[float]] = {}
    for r in rows:
        by.setdefault((r["variant"], r["target"], r["protocol"]), []).append(r["top1"])
    out = []
    for (variant, target, protocol), v in sorted(by.items()):
        if " + SASSL" not in variant:
            continue
        base = by.get((variant_group(variant) + " baseline", target, protocol))
        if not base:
            continue
        pval = None
        if len(v) > 1 and len(base) > 1:
            t = stats.ttest_ind(v, base, equal_var=False)
            pval = None if math.isnan(t.pvalue) else round(float(t.pvalue), 4)
        d = mean_std(v)[0] - mean_std(base)[0]
        out.append({"variant": variant, "target": target, "protocol": protocol, "diff": round(d, 2),
                    "seeds": f"{len(v)} vs {len(base)}", "p_value": pval,
                    "verdict": "n/a (<2 seeds)" if pval is None else ("significant (p<0.05)" if pval < 0.05 else "not significant")})
    return out


# ----------------------------------------------------------------------------- seed-paired differences
# Each seed is a pair (same init, data order, crops and augmentation draws): the tables below hold the per-seed
# differences' statistics (sassl.stats).

def parse_outcomes(specs: list[str], name: str = "primary") -> list[tuple[str, str]]:
    """Outcomes named as "TARGET/PROTOCOL" ("objects/linear", "objects/invariance beta=1.0") -> (target,
    protocol) pairs; the target may hold slashes (a folder), the protocol does not. ValueError names `name`."""
    out = []
    for spec in specs:
        target, sep, protocol = str(spec).rpartition("/")
        if not (sep and target and protocol):
            raise ValueError(f"{name}: {spec!r} is not TARGET/PROTOCOL (for example objects/linear)")
        out.append((target, protocol))
    return out


def paired_differences(rows: list[dict], a: str, b: str, method: str = "holm",
                       primary: list[tuple[str, str]] | None = None) -> list[dict]:
    """Variant b minus variant a per (target, protocol), paired by seed (collect_runs rows): paired_stats of
    the seeds both have, each seed's difference (by_seed: {seed: b - a}) and a's value (a_by_seed: {seed: a}),
    and the p-value adjusted across the rows (`method`).

    primary: (target, protocol) outcomes named before the data. Given, they come first (in that order), each
    row says its "family" ("primary" or "secondary") and p is adjusted within each family, so the few tests
    planned are not diluted by the many descriptive ones. A name that no row has is an error (a typo would
    silently shrink the family)."""
    by: dict[tuple, dict[int, float]] = {}
    for r in rows:
        by.setdefault((r["variant"], r["target"], r["protocol"]), {})[r["seed"]] = r["top1"]
    if primary:
        known = {(t, p) for _, t, p in by}
        unknown = [f"{t}/{p}" for t, p in primary if (t, p) not in known]
        if unknown:
            raise ValueError(f"primary outcomes (--primary): {', '.join(unknown)} not among the runs' outcomes "
                             f"(TARGET/PROTOCOL); they are: {', '.join(sorted(f'{t}/{p}' for t, p in known))}")
    out = []
    for target, protocol in dict.fromkeys((t, p) for v, t, p in by if v in (a, b)):
        va, vb = by.get((a, target, protocol), {}), by.get((b, target, protocol), {})
        seeds = sorted(set(va) & set(vb))
        if seeds:
            st = paired_stats([va[s] for s in seeds], [vb[s] for s in seeds])
            out.append({"target": target, "protocol": protocol, "seeds": len(seeds)} | st
                       | {"by_seed": {s: vb[s] - va[s] for s in seeds}, "a_by_seed": {s: va[s] for s in seeds}})
    if primary:
        order = {o: i for i, o in enumerate(primary)}
        for r in out:
            r["family"] = "primary" if (r["target"], r["protocol"]) in order else "secondary"
        out.sort(key=lambda r: order.get((r["target"], r["protocol"]), len(order)))  # stable: the rest keep theirs
    for family in dict.fromkeys(r.get("family") for r in out):
        rs = [r for r in out if r.get("family") == family]
        for r, q in zip(rs, adjust_pvalues([r["p"] for r in rs], method)):
            r[f"p_{method}"] = q
    return out


def interval(r: dict, kind: str = "t") -> str:
    """A paired_stats interval as text, "[low, high]" with signs ("" where there is none); kind: "t" (the
    t interval) or "ci" (the percentile bootstrap)."""
    low, high = r[f"{kind}_low"], r[f"{kind}_high"]
    return "" if low is None else f"[{low:+.2f}, {high:+.2f}]"


def sassl_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """(baseline, SASSL variant) for every SASSL variant among the rows whose baseline is there too."""
    variants = set(r["variant"] for r in rows)
    return [(variant_group(v) + " baseline", v) for v in sorted(variants)
            if " + SASSL" in v and variant_group(v) + " baseline" in variants]


def paired_report(rows: list[dict], method: str = "holm", primary: list[tuple[str, str]] | None = None) -> str:
    """Each SASSL variant minus its baseline, paired by seed, as a text table (sassl compare); with `primary`
    outcomes, those first and p adjusted within the primary and the secondary rows (paired_differences)."""
    lines = []
    for a, b in sassl_pairs(rows):
        across = "within the primary and within the secondary rows" if primary else "across rows"
        lines.append(f"{b}  minus  {a}  (paired by seed; p adjusted {across}: {method})")
        lines.append(f"{'target':<20} {'protocol':<16} {'seeds':>5} {'diff':>7} {'95% interval (t)':>17} "
                     f"{'bootstrap':>17} {'p':>6} {'p adj':>6} {'MDE':>6}" + ("  family" if primary else ""))
        for r in paired_differences(rows, a, b, method, primary):
            t, ci = interval(r, "t"), interval(r, "ci")
            p, q, mde = (("-" if v is None else f"{v:.3f}") for v in (r["p"], r[f"p_{method}"], r["mde"]))
            lines.append(f"{r['target']:<20} {r['protocol']:<16} {r['seeds']:>5} {r['diff']:>+7.2f} {t:>17} {ci:>17} "
                         f"{p:>6} {q:>6} {mde:>6}" + (f"  {r['family']}" if primary else ""))
        lines.append("")
    return "\n".join(lines) if lines else "no SASSL variant with its baseline among these runs"


# ----------------------------------------------------------------------------- style source vs target
# The paper (A.2): style invariance helps transfer where the style source resembles the target domain.

def style_gains(rows: list[dict], protocol: str = "linear") -> list[dict]:
    """Per SASSL variant whose style source is a set of images (not batch, noise or content) and per target:
    the variant's top-1 minus its baseline's, paired by seed (collect_runs rows). Rows {variant, style, target,
    gain, seeds}."""
    out = []
    for a, b in sassl_pairs(rows):
        style = next(r["style"] for r in rows if r["variant"] == b)
        if style in STYLE_KEYWORDS:
            continue
        for r in paired_differences(rows, a, b):
            if r["protocol"] == protocol:
                out.append({"variant": b, "style": style, "target": r["target"], "gain": r["diff"], "seeds": r["seeds"]})
    return out


def with_style_distances(gains: list[dict], distance) -> list[dict]:
    """gains (style_gains) with each row's `distance(style, target)`, computed once per pair; e.g. the Fréchet
    distance of their style embeddings (sassl.eval.tsne: style_embeddings, frechet_distance)."""
    cache: dict[tuple, float] = {}
    for g in gains:
        key = (g["style"], g["target"])
        if key not in cache:
            cache[key] = float(distance(*key))
    return [g | {"distance": cache[(g["style"], g["target"])]} for g in gains]


def to_markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of dict rows (for docs/RESULTS.md)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def fmt(v):
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
