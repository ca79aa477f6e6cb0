"""Figures of one evaluation: top-1 by target and protocol, and the cue-conflict shape bias."""
from __future__ import annotations


def summary_figure(summary: list[dict], title: str = ""):
    """Grouped bars: top-1 mean +- std per target, one colour per protocol."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for protocol in dict.fromkeys(r["protocol"] for r in summary):
        rs = [r for r in summary if r["protocol"] == protocol]
        fig.add_bar(name=protocol, x=[r["target"] for r in rs], y=[r["top1_mean"] for r in rs],
                    error_y={"type": "data", "array": [r["top1_std"] for r in rs]})
    fig.update_layout(barmode="group", template="plotly_white", yaxis_title="top-1 (%)", title=title)
    return fig


def shape_bias_figure(rows: list[dict], title: str = ""):
    """Bars: shape bias per target, one colour per head; hover: the share of decisive answers."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for head in dict.fromkeys(r["head"] for r in rows):
        rs = [r for r in rows if r["head"] == head]
        fig.add_bar(name=head, x=[r["target"] for r in rs], y=[r["shape_bias"] for r in rs],
                    hovertext=[f"decisive {r['decisive']:.0%} of {r['n']}" for r in rs])
    fig.update_layout(barmode="group", template="plotly_white", yaxis_title="shape bias (shape / decisive)",
                      yaxis_range=[0, 1], title=title)
    return fig
