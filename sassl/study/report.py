"""What a study shows, as a function of its trial folders alone (run it on a laptop over a copied folder): the
status of each trial, and for each comparison the paired table of every outcome (sassl.compare.paired_differences
over sassl.stats.paired_stats: Holm within the primary outcomes and within the rest), the minimum detectable
effect, the pairs needed for a stated effect, the per-seed values and the forest plot of the primary outcomes."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sassl.compare import collect_runs, interval, paired_differences, to_markdown
from sassl.data import get_dataset, parse_name
from sassl.eval import tsne
from sassl.figures.comparison import gain_distance_figure, paired_figure
from sassl.figures.save import save_figure
from sassl.plan import trace_step
from sassl.records import duration, read_metrics, write_table
from sassl.stats import correlation, correlation_text, pairs_needed
from sassl.study.runner import TIMING, expected_seconds, trial_state
from sassl.study.spec import Study
from sassl.stylizer import STYLE_KEYWORDS
from sassl.training.config import PretrainConfig, config_from_dict

COLUMNS = ("comparison", "family", "target", "protocol", "n", "diff", "ci_low", "ci_high", "p", "p_adjusted", "mde",
           "pairs_for_effect", "sd", "by_seed")


def status_rows(study: Study, runs_dir: str | Path) -> list[dict]:
    """One row per trial: state, steps done / planned, the last kNN monitor value, evaluation present, wall time."""
    folder, rows = study.dir(runs_dir), []
    for t in study.trials(runs_dir):
        run = folder / t.name
        metrics = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
        cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        per_epoch = cfg.get("resolved", {}).get("steps_per_epoch")
        planned = per_epoch * (cfg.get("epochs") or 0) if per_epoch else None
        if cfg.get("max_steps") and planned:
            planned = min(planned, cfg["max_steps"])
        knn = [r["knn_top1"] for r in metrics if "knn_top1" in r]
        timing = json.loads((run / TIMING).read_text())["seconds"] if (run / TIMING).is_file() else None
        rows.append({"trial": t.name, "arm": t.arm, "seed": t.seed, "state": trial_state(run),
                     "steps": f"{max((r['step'] for r in metrics), default=0)}/{planned or '?'}",
                     "knn": round(knn[-1], 2) if knn else None,
                     "evaluated": (run / "eval" / "summary.json").is_file(),
                     "time": duration(timing) if timing is not None else ""})
    return rows


def report_rows(study: Study, runs_dir: str | Path, effect: float | None = None) -> list[dict]:
    """Every comparison's paired rows (arm minus against), primary outcomes first; `effect`: also the pairs a
    paired t-test needs to detect that difference with 80% power at the observed sd."""
    folder = study.dir(runs_dir)
    trials = study.trials(runs_dir)
    done = [t for t in trials if trial_state(folder / t.name) == "finished"]
    arm_of = {t.name: t.arm for t in done}
    rows = [r | {"variant": arm_of[r["run"]]} for r in collect_runs(folder, [t.name for t in done])] if done else []
    out = []
    for arm, against in study.compare:
        present = {(r["target"], r["protocol"]) for r in rows if r["variant"] in (arm, against)}
        primary = [o for o in study.primary if o in present]
        for r in paired_differences(rows, against, arm, "holm", primary or None):
            family = r.get("family", "secondary")
            need = pairs_needed(r["sd"], effect) if effect and r["sd"] else None
            out.append({"comparison": f"{arm} - {against}", "family": family, "target": r["target"],
                        "protocol": r["protocol"], "n": r["n"], "diff": r["diff"], "ci_low": r["t_low"],
                        "ci_high": r["t_high"], "p": r["p"], "p_adjusted": r["p_holm"], "mde": r["mde"],
                        "pairs_for_effect": need, "sd": r["sd"], "by_seed": r["by_seed"], "variant": f"{arm} - {against}",
                        "seeds": r["seeds"], "t_low": r["t_low"], "t_high": r["t_high"]})
    return out


def style_source_comparisons(study: Study) -> list[tuple[str, str, str]]:
    """(arm, against, source) of each comparison that asks the paper's A.2: the arm is its baseline (style none)
    with a style source of images added (a dataset, folder or bank: not batch, noise or content), nothing else."""
    out = []
    for arm, against in study.compare:
        a, b = study.pretrain | study.arms[arm], study.pretrain | study.arms[against]
        source = a.get("style", PretrainConfig.style)
        if b.get("style", PretrainConfig.style) == "none" and source not in (*STYLE_KEYWORDS, "none") and \
                {k: v for k, v in a.items() if k != "style"} == {k: v for k, v in b.items() if k != "style"}:
            out.append((arm, against, source))
    return out


def style_gain_points(study: Study, rows: list[dict], distance: Callable[[str, str], float],
                      protocol: str = "linear") -> list[dict]:
    """A.2's points: per style-source comparison (style_source_comparisons) and target, the paired mean gain of
    `protocol` (report_rows) and distance(source, target) (the Fréchet distance of their style embeddings). Empty
    for a study of fewer than two style sources: A.2 asks across sources (one source's gains against its distances
    to the targets: the compare notebook)."""
    sources = {f"{arm} - {against}": source for arm, against, source in style_source_comparisons(study)}
    if len(set(sources.values())) < 2:
        return []
    return [{"comparison": r["comparison"], "variant": r["comparison"], "style": sources[r["comparison"]],
             "target": r["target"], "gain": r["diff"], "seeds": r["n"],
             "distance": float(distance(sources[r["comparison"]], r["target"]))}
            for r in rows if r["comparison"] in sources and r["protocol"] == protocol]


def kept_distances(folder: Path, per_dataset: int = 100) -> Callable[[str, str], float]:
    """style_distance(source, target) over `per_dataset` seeded images of each, kept in folder/style_distances.json
    (embedding them takes minutes on a CPU; a report is written again each time trials finish)."""
    path = folder / "style_distances.json"

    def distance(source: str, target: str) -> float:
        kept = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{source} -> {target} ({per_dataset} images)"
        if key not in kept:
            kept[key] = tsne.style_distance(source, target, per_dataset)
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(kept, indent=1))
        return kept[key]
    return distance


def style_gain_markdown(points: list[dict]) -> list[str]:
    """The A.2 section: each point, and Pearson's r over them with its Fisher-z interval."""
    r = correlation_text(correlation([p["distance"] for p in points], [p["gain"] for p in points]),
                         "(source, target) points")
    table = [{"source": p["style"], "target": p["target"], "distance": f"{p['distance']:.2f}", "pairs": p["seeds"],
              "linear gain": _fmt(p["gain"])} for p in sorted(points, key=lambda p: p["distance"])]
    return ["", "## Style source against target (A.2)", "", "Each style source's paired linear-probe gain over the "
            "baseline on each target, against the Fréchet distance from the source's style embeddings to the target's "
            "(100 seeded images each). The paper's A.2 predicts a negative correlation (gains where the source "
            "resembles the target). " + (r or "Too few points for a correlation."), "", to_markdown(table)]


def missing_trials(study: Study, runs_dir: str | Path) -> list[str]:
    folder = study.dir(runs_dir)
    return [t.name for t in study.trials(runs_dir) if trial_state(folder / t.name) != "finished"]


def _fmt(v, spec: str = "{:+.2f}") -> str:
    return "" if v is None else spec.format(v)


def report_markdown(study: Study, runs_dir: str | Path, rows: list[dict], effect: float | None = None,
                    points: list[dict] = ()) -> str:
    folder = study.dir(runs_dir)
    lines = [f"# Study {study.name}", "", f"Primary outcomes (named in the study file): "
             f"{', '.join(f'{t}/{p}' for t, p in study.primary)}. Paired by seed; t 95% intervals; Holm within the "
             "primary outcomes and within the rest; MDE: the difference a paired t-test at 0.05 detects with 80% power "
             "at the observed sd and the present pairs."]
    amendments = folder / "amendments.jsonl"
    if amendments.is_file():
        for a in map(json.loads, amendments.read_text().splitlines()):
            when = " after results existed" if a["results_existed"] else " before any result"
            lines.append(f"\n**Amended{when}** ({a['time']}): {', '.join(a['changed'])}.")
    missing = missing_trials(study, runs_dir)
    if missing:
        lines.append(f"\n**Missing trials** ({len(missing)} of {len(study.trials(runs_dir))}): {', '.join(missing)}; "
                     "the tables below pair the seeds that both arms have.")
    for comparison in dict.fromkeys(r["comparison"] for r in rows):
        table = [{"family": r["family"], "outcome": f"{r['target']}/{r['protocol']}", "pairs": r["n"],
                  "diff": _fmt(r["diff"]), "t 95% CI": interval(r), "p": _fmt(r["p"], "{:.3f}"),
                  "p Holm": _fmt(r["p_adjusted"], "{:.3f}"), "MDE": _fmt(r["mde"], "{:.2f}")}
                 | ({f"pairs for {effect:g}": r["pairs_for_effect"] or ""} if effect else {})
                 | {"by seed": ", ".join(f"{s}: {v:+.2f}" for s, v in r["by_seed"].items())}
                 for r in rows if r["comparison"] == comparison]
        lines += ["", f"## {comparison}", "", to_markdown(table)]
    if points:
        lines += style_gain_markdown(points)
    if not rows:
        lines.append("\nNo comparison has a finished pair yet.")
    return "\n".join(lines) + "\n"


def write_report(study: Study, runs_dir: str | Path, effect: float | None = None,
                 distance: Callable[[str, str], float] | None = None) -> Path:
    """report/: report.md, report.csv, report.json (the rows) and forest.html (+ .png) of the primary outcomes;
    where comparisons ask A.2 (style_source_comparisons), style_gain.csv and style_gain.html too. `distance`:
    source, target -> style distance (default: kept_distances in report/)."""
    out = study.dir(runs_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = report_rows(study, runs_dir, effect)
    points = style_gain_points(study, rows, distance or kept_distances(out))
    if points:
        write_table(points, out / "style_gain")
        save_figure(gain_distance_figure(points), out / "style_gain")
    plain = [{k: r[k] for k in COLUMNS} for r in rows]
    write_table([r | {"by_seed": json.dumps(r["by_seed"])} for r in plain], out / "report")  # report.csv
    (out / "report.json").write_text(json.dumps(plain, indent=1))  # by_seed as an object, not a string
    (out / "report.md").write_text(report_markdown(study, runs_dir, rows, effect, points))
    if rows:
        save_figure(paired_figure(rows, family="primary"), out / "forest")
    return out


def trial_gflop(pretrain: dict, train_images: int | None = None) -> float:
    """One trial's pre-training compute in GFLOP, from sassl.plan's FLOP count of its step (fake tensors, no
    weights): epochs x the images an epoch trains (whole batches of `train_images`, else the size of the
    config's training set) x (the learner's forward and backward of both views + p x SASSL per stylized image).
    Evaluation is not counted (linear probes and kNN are a few percent of pre-training)."""
    cfg = config_from_dict({k: v for k, v in pretrain.items() if k != "runs_dir"})
    if train_images is None:
        try:
            train_images = len(get_dataset(parse_name(cfg.dataset)[0], split="train"))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"dataset {cfg.dataset!r} cannot be read here to count its images ({e}); give "
                             "--train-images N (ImageNet-1k: 1281167)") from None
    mem = trace_step(cfg, cfg.batch_size // cfg.accumulate, cfg.batch_size, None)
    stylized = cfg.p if cfg.style != "none" else 0.0
    images = cfg.epochs * (train_images // cfg.batch_size) * cfg.batch_size
    return images * (mem.learner_flops + stylized * mem.sassl_flops) / 1e9


def plan_rows(study: Study, runs_dir: str | Path, effect: float, pilot: Study | None = None,
              pilot_runs_dir: str | Path | None = None, lanes: int = 1, gpu_tflops: float = 200.0,
              train_images: int | None = None) -> list[dict]:
    """Per comparison and primary outcome: the pairs a paired t-test needs for 80% power at `effect`, at the sd
    of the pilot's pairs (the study's own finished pairs, or another study's), and what they cost: the trials
    still to run for that many seeds x the mean finished trial's wall time / lanes, and in GPU hours at
    `gpu_tflops` sustained per GPU (trial_gflop of each arm's config: what a cluster is asked for, also where no
    trial has run)."""
    source, source_dir = (pilot, pilot_runs_dir or runs_dir) if pilot is not None else (study, runs_dir)
    pilot_rows = {(r["comparison"], f"{r['target']}/{r['protocol']}"): r
                  for r in report_rows(source, source_dir, effect) if r["family"] == "primary" and r["n"] >= 2}
    if not pilot_rows:
        raise ValueError(f"study {source.name}: no two finished pairs of a primary outcome to plan from; run two "
                         "seeds of each arm first (a pilot), or give --pilot OTHER.toml")
    main_comparison = " - ".join(source.compare[0])  # a pilot's sd where it does not run this study's comparison
    per_trial = expected_seconds(study, runs_dir)
    folder, out, arm_gflop = study.dir(runs_dir), [], {}
    for t in study.trials(runs_dir):  # one arm's trials differ by seed alone
        if t.arm not in arm_gflop:
            arm_gflop[t.arm] = trial_gflop(t.pretrain, train_images)
    for arm, against in study.compare:
        finished = {a: {t.seed for t in study.trials(runs_dir) if t.arm == a and trial_state(folder / t.name) == "finished"}
                    for a in (arm, against)}
        pairs, halves = finished[arm] & finished[against], finished[arm] ^ finished[against]
        for target, protocol in study.primary:
            outcome = f"{target}/{protocol}"
            r = pilot_rows.get((f"{arm} - {against}", outcome)) or pilot_rows.get((main_comparison, outcome))
            if r is None:
                continue
            need = r["pairs_for_effect"]
            more = None if need is None else max(0, need - len(pairs))  # a half pair costs one trial, a new seed two
            todo = None if more is None else min(more, len(halves)) + 2 * max(0, more - len(halves))
            gpu_h = None
            if more is not None:  # the half pairs' missing arm, then whole pairs of both arms
                half_arms = [against if s in finished[arm] else arm for s in sorted(halves)][:min(more, len(halves))]
                gflop = sum(arm_gflop[a] for a in half_arms) + max(0, more - len(halves)) * (arm_gflop[arm] +
                                                                                               arm_gflop[against])
                gpu_h = float(f"{gflop / (gpu_tflops * 1e3) / 3600:.3g}")
            out.append({"comparison": f"{arm} - {against}", "outcome": outcome,
                        "pilot": f"{source.name}: {r['comparison']}", "pilot pairs": r["n"], "sd": round(r["sd"], 2),
                        f"pairs for {effect:g}": need, "trials to run": todo,
                        "time": duration(todo * per_trial / lanes) if todo and per_trial else ("0" if todo == 0 else ""),
                        f"GPU hours at {gpu_tflops:g} TFLOP/s": gpu_h})
    return out
