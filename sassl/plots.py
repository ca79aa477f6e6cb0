"""Plotly figures saved as HTML (always) and PNG (when kaleido can render, within a time limit)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from sassl.records import read_metrics

# NOTE: kaleido renders through a headless browser, and that export hangs at random on some hosts (plotly/Kaleido
# issues 134 and 110; seen here once, at the end of a training run on a loaded 2-core machine). It runs in a
# process of its own that is killed after PNG_TIMEOUT_S, so a figure never holds up a run: the HTML is written
# first and stays the figure.
PNG_TIMEOUT_S = 120.0
PNG_ENV = "SASSL_PNG"  # "0": figures as HTML only, no browser started (the test suite; headless batch jobs)
_RENDER = ("import sys, plotly.io as pio; pio.from_json(sys.stdin.read(), skip_invalid=True).write_image("
           "sys.argv[1], width=int(sys.argv[2]), height=int(sys.argv[3]), scale=1)")


def write_png(fig, path: str | Path, width: int, height: int, timeout: float = PNG_TIMEOUT_S) -> None:
    """fig as a PNG at `path`, rendered by kaleido in a child process (its own process group, killed with its
    browser after `timeout` seconds: TimeoutError); a failed render raises RuntimeError with kaleido's message."""
    proc = subprocess.Popen([sys.executable, "-c", _RENDER, str(path), str(width), str(height)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(fig.to_json().encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"static export took over {timeout:g} s") from None
    if proc.returncode:
        raise RuntimeError(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "kaleido failed")


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write stem.html, and stem.png if a static renderer (kaleido) works here within PNG_TIMEOUT_S (and
    $SASSL_PNG is not 0); returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".html")]
    fig.write_html(out[0], include_plotlyjs="cdn")
    if os.environ.get(PNG_ENV, "1") == "0":
        return out
    try:
        write_png(fig, stem.with_suffix(".png"), fig.layout.width or 1000, fig.layout.height or 450)
        out.append(stem.with_suffix(".png"))
    except (RuntimeError, TimeoutError, OSError) as e:  # kaleido missing, no browser, or a hung export
        warnings.warn(f"no PNG for {stem.name} (static export unavailable: {type(e).__name__}: {e}); the HTML has "
                      "the figure")
    return out


def training_curves(metrics_file: str | Path, stem: str | Path) -> list[Path]:
    """Save curves_figure(metrics_file) as stem.html (+ .png)."""
    return save_figure(curves_figure(metrics_file), stem)


def curves_figure(metrics_file: str | Path):
    """Loss per step and kNN top-1 per epoch from a metrics.jsonl, side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = read_metrics(metrics_file)
    steps = [r for r in rows if "loss" in r]
    epochs = [r for r in rows if "knn_top1" in r]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "kNN top-1 (%) on the held-out split"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in steps], y=[r["loss"] for r in steps], mode="lines", name="loss"), 1, 1)
    fig.add_trace(go.Scatter(x=[r["epoch"] for r in epochs], y=[r["knn_top1"] for r in epochs], mode="lines+markers",
                             name="kNN top-1"), 1, 2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_layout(template="plotly_white", showlegend=False)
    return fig


def excess_loss(record: np.ndarray) -> np.ndarray:
    """Each row's loss minus the mean loss of its step's images: what is left once training progress (the
    loss falling over steps) is taken out. record: AUGMENT rows (sassl.tracking.read_augment)."""
    _, inverse = np.unique(record["step"], return_inverse=True)
    mean = np.bincount(inverse, weights=record["loss"]) / np.bincount(inverse)
    return record["loss"] - mean[inverse]


def augment_summary(record: np.ndarray, bins: int = 8) -> list[dict]:
    """The augmentation record in a few rows: mean excess loss (excess_loss) of the stylized and the unstylized
    images ({"by": "stylized", "value": 1 / 0}), and of the stylized ones per equal-width bin of alpha and of beta
    ({"by": "alpha" / "beta", "value": the bin's centre}); each with its image count and its standard error."""
    ex = excess_loss(record) if len(record) else np.zeros(0)
    on = record["stylized"].astype(bool)

    def row(by: str, value: float, sel: np.ndarray) -> dict:
        e = ex[sel]
        se = float(e.std(ddof=1) / np.sqrt(len(e))) if len(e) > 1 else float("nan")
        return {"by": by, "value": value, "images": int(len(e)), "excess_loss": float(e.mean()), "stderr": se}
    rows = [row("stylized", v, on == bool(v)) for v in (1, 0) if (on == bool(v)).any()]
    for key in ("alpha", "beta"):
        v = record[key][on].astype(np.float64)
        if len(v):
            edges = np.linspace(v.min(), v.max(), bins + 1)  # the largest value goes to the last bin
            which = np.full(len(record), -1)
            which[on] = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
            rows += [row(key, float((edges[b] + edges[b + 1]) / 2), which == b) for b in range(bins)
                     if (which == b).any()]
    return rows


def augment_trend(summary: list[dict], key: str, per: float = 0.1) -> tuple[float, float] | None:
    """How the excess loss of stylized images changes per `per` of alpha or beta (key): the weighted
    least-squares line through augment_summary's bin means (weights 1 / stderr^2), as (slope, its standard
    error), both per `per`. It reads the summary rows (augment_summary.csv), so kept runs without their
    augment.bin get it too. None with fewer than 3 bins that have a standard error."""
    rs = [r for r in summary if r["by"] == key and np.isfinite(r["stderr"]) and r["stderr"] > 0]
    if len(rs) < 3:
        return None
    x = np.array([r["value"] for r in rs], dtype=np.float64)
    y = np.array([r["excess_loss"] for r in rs], dtype=np.float64)
    w = 1.0 / np.array([r["stderr"] for r in rs], dtype=np.float64) ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    slope = (w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx
    return float(slope * per), float(per / np.sqrt(sxx))  # the bins' own errors, not the scatter about the line


def augment_figure(record: np.ndarray, bins: int = 8, styles: int = 30):
    """Which SASSL draws are hard: excess loss (excess_loss) of stylized images against alpha and against beta
    (augment_summary's means per bin +- one standard error, with the unstylized images' mean as a line), and per
    style row (the `styles` most drawn)."""
    from plotly.subplots import make_subplots

    ex = excess_loss(record)
    on = record["stylized"].astype(bool)
    summary = augment_summary(record, bins)

    def title(key: str, what: str) -> str:
        trend = augment_trend(summary, key)
        return f"against {key} ({what})" + (f"<br>{trend[0]:+.4f} +- {trend[1]:.4f} per 0.1" if trend else "")
    fig = make_subplots(1, 3, subplot_titles=(title("alpha", "embedding blend"), title("beta", "pixel blend"),
                                              f"per style (the {styles} most drawn)"))
    for col, key in ((1, "alpha"), (2, "beta")):
        rs = [r for r in summary if r["by"] == key]
        if rs:
            fig.add_scatter(x=[r["value"] for r in rs], y=[r["excess_loss"] for r in rs], mode="lines+markers",
                            name=f"stylized, by {key}", row=1, col=col, hovertext=[f"{r['images']} images" for r in rs],
                            error_y={"type": "data", "array": [r["stderr"] for r in rs]})  # +- one standard error
        plain = [r for r in summary if r["by"] == "stylized" and r["value"] == 0]
        if plain:
            fig.add_hline(y=plain[0]["excess_loss"], line_dash="dot", row=1, col=col, annotation_text="not stylized")
    ids, counts = np.unique(record["style"][on], return_counts=True)
    top = ids[np.argsort(-counts)[:styles]]
    means = {int(i): float(ex[on][record["style"][on] == i].mean()) for i in top}
    order = sorted(means, key=means.get)
    fig.add_bar(x=[str(i) for i in order], y=[means[i] for i in order], name="by style row", row=1, col=3)
    fig.update_yaxes(title_text="loss - its step's mean", row=1, col=1)
    fig.update_xaxes(title_text="alpha", row=1, col=1)
    fig.update_xaxes(title_text="beta", row=1, col=2)
    fig.update_xaxes(title_text="style row", type="category", row=1, col=3)
    fig.update_layout(template="plotly_white", title="per-image loss against SASSL's draws", showlegend=False)
    return fig
