"""Figures of style space: the t-SNE scatter of style embeddings and the overlap heatmaps between datasets."""
from __future__ import annotations

import numpy as np

from sassl.eval.tsne import tsne

def tsne_figure(emb: np.ndarray, labels: np.ndarray, names: np.ndarray, perplexity: float = 30.0,
                iterations: int = 1000, seed: int = 0, title: str = "style space (t-SNE of style embeddings)",
                early_exaggeration: float = 12.0):
    """Interactive scatter: colour = dataset, hover = image path / id."""
    import plotly.graph_objects as go

    xy = tsne(emb, perplexity, iterations, seed, early_exaggeration)
    fig = go.Figure()
    for name in dict.fromkeys(labels.tolist()):
        m = labels == name
        fig.add_scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name=name, hovertext=names[m],
                          hoverinfo="text+name", marker={"size": 6, "opacity": 0.75})
    fig.update_layout(title=title, template="plotly_white", xaxis_title="t-SNE 1", yaxis_title="t-SNE 2",
                      legend_title="dataset")
    return fig


def overlap_figure(m: dict):
    """Two heatmaps side by side: Fréchet distance (lower = closer) and kNN overlap (higher = more mixed)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("Fréchet distance (lower = closer styles)", "kNN overlap (1 = mixed, 0 = apart)"))
    for col, key, scale in ((1, "frechet", "Viridis_r"), (2, "knn_overlap", "Viridis")):
        z = np.round(np.array(m[key]), 2)
        fig.add_trace(go.Heatmap(z=z, x=m["datasets"], y=m["datasets"], text=z, texttemplate="%{text}",
                                 colorscale=scale, showscale=False), 1, col)
    fig.update_yaxes(autorange="reversed")  # read as a matrix: first dataset top left
    fig.update_layout(template="plotly_white", title="style-embedding overlap between datasets")
    return fig
