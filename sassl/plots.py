"""Plotly figures saved as HTML (always) and PNG (when kaleido can render)."""
from __future__ import annotations

import warnings
from pathlib import Path

from sassl.runtime import read_metrics


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write stem.html, and stem.png if a static renderer (kaleido) works here; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".html")]
    fig.write_html(out[0], include_plotlyjs="cdn")
    try:
        fig.write_image(stem.with_suffix(".png"), width=fig.layout.width or 1000, height=fig.layout.height or 450, scale=1)
        out.append(stem.with_suffix(".png"))
    except Exception as e:  # kaleido missing or without a browser: the HTML is the figure
        warnings.warn(f"no PNG for {stem.name} (static export unavailable: {type(e).__name__}); the HTML has the figure")
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
