"""An evaluation folder read back: its summary rows and the text report (top-1 by target and protocol, the
random-init baseline beside it with the gain), whether a cached one was made with given settings; the summary over
seeds of result rows, and what a stopped evaluation leaves."""
from __future__ import annotations

import json
from pathlib import Path

from sassl import dist
from sassl.interrupt import Stopped, signal_name
from sassl.storage import rebuilding
from sassl.records import write_table
from sassl.stats import mean_std


def read_summary(out: str | Path, name: str = "summary") -> list[dict]:
    """An eval folder's summary rows (`name`.json: summary, or baseline_summary), [] when it has none."""
    path = Path(out) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else []


def eval_report(out: str | Path) -> str:
    """The evaluation in an eval folder as text: target x protocol, top-1 mean +- std, the random-init
    baseline beside it with the gain, then where the tables and figures are."""
    out = Path(out)
    summary = read_summary(out)
    base = {(r["target"], r["protocol"]): r for r in read_summary(out, "baseline_summary")}
    w = max([len("target")] + [len(r["target"]) for r in summary])
    lines = [f"{'target':<{w}}  {'protocol':<16}  {'n':>3}  {'top-1 (%)':>15}  {'random init':>15}  {'gain':>6}"]
    for r in summary:
        b = base.get((r["target"], r["protocol"]))
        ours = f"{r['top1_mean']:6.2f} +- {r['top1_std']:5.2f}"
        theirs = f"{b['top1_mean']:6.2f} +- {b['top1_std']:5.2f}" if b else "-"
        gain = f"{r['top1_mean'] - b['top1_mean']:+6.2f}" if b else ""
        lines.append(f"{r['target']:<{w}}  {r['protocol']:<16}  {r['n']:>3}  {ours:>15}  {theirs:>15}  {gain:>6}")
    lines.append(f"tables: {out / 'summary.csv'} (per seed: results.csv; random init: baseline_summary.csv); "
                 f"figure: {out / 'figures' / 'summary.html'}")
    return "\n".join(lines)


def stopped_evaluation(cfg, out: Path, tables: dict, done: list[str], signum: int, writer: bool) -> Stopped:
    """What evaluate() raises on a stop signal after the protocols `done`: their rows are kept, run.json says what
    is missing, and no summary.json is written (it means a whole evaluation)."""
    missing = [f"{t}/{p}" for t in cfg.targets for p in cfg.protocols if f"{t}/{p}" not in done]
    if writer:
        for table, rows in tables.items():
            if rows:
                write_table(rows, out / table)
        (out / "run.json").write_text(json.dumps({"stopped_by": signal_name(signum), "finished": done,
                                                  "missing": missing}, indent=1))
    dist.barrier()
    return Stopped(signum, f"stopped by {signal_name(signum)} after {len(done)} of {len(done) + len(missing)} "
                           f"target/protocol pairs; their rows are in {out}/results.json; run the same command "
                           "again for the whole evaluation (cached features are reused)")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and (sample) std of top1/top5 per (target, protocol), over seeds / episodes."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["protocol"]), []).append(r)
    out = []
    for (target, protocol), rs in groups.items():
        row = {"target": target, "protocol": protocol, "n": len(rs)}
        for m in ("top1", "top5"):
            v = [r[m] for r in rs if r.get(m) is not None]
            mean, std = mean_std(v) if v else (None, None)
            row[f"{m}_mean"] = None if mean is None else round(mean, 3)
            row[f"{m}_std"] = None if std is None else round(std, 3)
        out.append(row)
    return out


def baseline_matches(folder: Path, settings: dict) -> bool:
    """Whether `folder` holds a whole evaluation (summary.json) made with `settings` (its config.json)."""
    if not (folder / "summary.json").is_file():
        return False
    try:
        made = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        rebuilding(folder, f"has no readable config.json ({type(e).__name__})")
        return False
    differ = sorted(k for k, v in settings.items() if json.dumps(made.get(k), default=list) != json.dumps(v, default=list))
    if differ:
        rebuilding(folder, f"was evaluated with other settings ({', '.join(differ)})")
    return not differ
