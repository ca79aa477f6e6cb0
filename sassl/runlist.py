"""`sassl runs`: the runs under a runs folder as one table (what a logger's run list shows), read from the
files each run leaves (config.json, metrics.jsonl, metrics.json, eval/summary.json); no checkpoint is loaded."""
from __future__ import annotations

import json
from pathlib import Path

from sassl.eval.report import read_summary
from sassl.records import read_metrics

COLUMNS = ("name", "learner", "style", "steps", "knn", "linear", "state", "size")


def planned_steps(cfg: dict, rows: list[dict]) -> int | None:
    """Steps the run plans: its epochs (or the time budget's choice) x steps per epoch, capped by max_steps;
    None for a run whose config.json does not record its steps per epoch."""
    per_epoch = cfg.get("resolved", {}).get("steps_per_epoch")
    if not per_epoch:
        return cfg.get("max_steps") or None
    epochs = next((r["epochs_in_budget"] for r in reversed(rows) if "epochs_in_budget" in r), cfg.get("epochs", 0))
    total = per_epoch * epochs
    return min(total, cfg["max_steps"]) if cfg.get("max_steps") else total


def linear_top1(run_dir: Path) -> str:
    """The run's linear-probe top-1 from its evaluation summary (its first target), '' when not evaluated."""
    rows = [r for r in read_summary(run_dir / "eval") if r["protocol"] == "linear"]
    return f"{rows[0]['top1_mean']:.2f} ({rows[0]['target']})" if rows else ""


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_row(run_dir: Path) -> dict | None:
    """One run's row, or None when the folder holds no pre-training run (no config.json of one)."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if "learner" not in cfg:
        return None
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    done = max((r["step"] for r in rows), default=0)
    planned = planned_steps(cfg, rows)
    knn = next((r["knn_top1"] for r in reversed(rows) if "knn_top1" in r), None)
    has_ckpt = (run_dir / "checkpoints" / "last.pt").is_file()
    finished = (run_dir / "metrics.json").is_file() and planned is not None and done >= planned
    state = "finished" if finished else "resumable" if has_ckpt else "empty"
    return {"name": run_dir.name, "learner": cfg["learner"], "style": cfg.get("style", ""),
            "steps": f"{done}/{planned if planned is not None else '?'}", "knn": "" if knn is None else f"{knn:.2f}",
            "linear": linear_top1(run_dir), "state": state, "size": human_size(folder_size(run_dir))}


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def list_runs(runs_dir: str | Path) -> list[dict]:
    """A row per pre-training run folder under runs_dir, by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--runs-dir: {root} is not a folder (give the folder that holds your runs)")
    return [r for d in sorted(root.iterdir()) if d.is_dir() and (r := run_row(d)) is not None]


def format_table(rows: list[dict], columns: tuple = COLUMNS) -> str:
    """Rows as an aligned text table with a header."""
    cells = [list(columns)] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)
