"""What a run records and prints: the code's commit, metrics.jsonl rows, tables (json + csv), terminal lines."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path


def git_commit() -> str | None:
    """The commit of the sassl checkout, or None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def terminal_line(text: str) -> None:
    """One progress line where a person watching the job sees it. In a Jupyter kernel (JupyterLab or
    papermill) the kernel's own stderr is the terminal that launched it, and ipykernel also copies what is
    written there into the cell's output; elsewhere, stdout."""
    if "ipykernel" in sys.modules and sys.__stderr__ is not None:
        sys.__stderr__.write(text + "\n")
        sys.__stderr__.flush()
    else:
        print(text, flush=True)


def duration(seconds: float) -> str:
    """'42 s', '7 min 05 s', '2 h 03 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def read_metrics(path) -> list[dict]:
    """The rows of a run's metrics.jsonl (per-step losses, per-epoch summaries and kNN monitors)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_table(rows: list[dict], stem) -> None:
    """rows as stem.json and stem.csv (columns in first-seen order); creates the folder."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
