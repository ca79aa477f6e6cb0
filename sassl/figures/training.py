"""A run's own figures: the training curves (loss, the monitor's kNN, linear probe and RankMe) and the augmentation
record's excess loss against SASSL's draws."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sassl.figures.save import save_figure
from sassl.records import read_metrics
from sassl.tracking import augment_summary, augment_trend, excess_loss

def training_curves(metrics_file: str | Path, stem: str | Path) -> list[Path]:
    """Save curves_figure(metrics_file) as stem.html (+ .png)."""
    return save_figure(curves_figure(metrics_file), stem)


def curves_figure(metrics_file: str | Path):
    """Loss per step; the monitor's kNN and linear-probe top-1 per epoch; its RankMe per epoch: side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = read_metrics(metrics_file)
    steps = [r for r in rows if "loss" in r]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("training loss", "top-1 (%) on the held-out split",
                                                        "RankMe of the train features"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in steps], y=[r["loss"] for r in steps], mode="lines", name="loss"), 1, 1)
    for key, name, col in (("knn_top1", "kNN", 2), ("probe_top1", "linear probe", 2), ("rankme", "RankMe", 3)):
        epochs = [r for r in rows if key in r]
        if epochs:
            fig.add_trace(go.Scatter(x=[r["epoch"] for r in epochs], y=[r[key] for r in epochs],
                                     mode="lines+markers", name=name), 1, col)
    fig.update_xaxes(title_text="step", row=1, col=1)
    for col in (2, 3):
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


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
