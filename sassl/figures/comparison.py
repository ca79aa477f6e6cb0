"""Figures of run comparisons (sassl.compare's tables): accuracy and instruments by variant, the forest plot of
seed-paired differences, and SASSL's gain against the style distance between source and target."""
from __future__ import annotations

from sassl.compare import is_instrument
from sassl.stats import correlation, correlation_text


def gain_distance_figure(points: list[dict], protocol: str = "linear"):
    """Transfer gain against the style source's distance to the target, one point per (variant, target), with
    the Pearson correlation and its Fisher-z interval in the title (the paper's claim predicts a negative one)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for target in dict.fromkeys(p["target"] for p in points):
        ps = [p for p in points if p["target"] == target]
        fig.add_scatter(x=[p["distance"] for p in ps], y=[p["gain"] for p in ps], mode="markers+text", name=target,
                        text=[p["style"] for p in ps], textposition="top center",
                        hovertext=[f"{p['variant']}, {p['seeds']} seeds" for p in ps])
    r = correlation_text(correlation([p["distance"] for p in points], [p["gain"] for p in points]))
    fig.update_layout(template="plotly_white", xaxis_title="Fréchet distance, style source to target (style space)",
                      yaxis_title=f"SASSL minus baseline, {protocol} top-1 (points)",
                      title="transfer gain against style distance" + (f"<br><sup>{r}</sup>" if r else ""))
    return fig


def paired_figure(paired: list[dict], family: str | None = "primary"):
    """Forest plot of paired differences (paired_differences rows, each with its "variant"): per outcome the
    mean difference with its t 95% interval (none where the differences have no spread) and each seed's
    difference as an open dot, one colour per variant, beside the line of no difference. `family`: only the
    rows of that family (every row where the rows name none, or with None)."""
    import plotly.colors
    import plotly.graph_objects as go

    rows = [r for r in paired if family is None or r.get("family", family) == family]
    colours = plotly.colors.qualitative.Dark24
    fig = go.Figure()
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        rs = [r for r in rows if r["variant"] == variant]
        label = [f"{r['target']} / {r['protocol']}" for r in rs]
        has = [r["t_low"] is not None for r in rs]
        fig.add_scatter(name=f"{variant}: mean, t 95% interval", x=[r["diff"] for r in rs], y=label, mode="markers",
                        orientation="h", offsetgroup=variant, legendgroup=variant,
                        marker={"size": 11, "color": colours[i % len(colours)], "symbol": "diamond"},
                        error_x={"type": "data", "symmetric": False,
                                 "array": [r["t_high"] - r["diff"] if h else 0.0 for r, h in zip(rs, has)],
                                 "arrayminus": [r["diff"] - r["t_low"] if h else 0.0 for r, h in zip(rs, has)]},
                        customdata=[[r["seeds"], r.get("p")] for r in rs],
                        hovertemplate="%{y}: %{x:+.2f} (%{customdata[0]} seeds, p %{customdata[1]:.3f})")
        fig.add_scatter(name=f"{variant}: each seed", x=[v for r in rs for v in r["by_seed"].values()],
                        y=[lab for r, lab in zip(rs, label) for _ in r["by_seed"]], mode="markers",
                        orientation="h", offsetgroup=variant, legendgroup=variant,
                        marker={"size": 7, "color": colours[i % len(colours)], "symbol": "circle-open"},
                        text=[f"seed {s}" for r in rs for s in r["by_seed"]], hovertemplate="%{y}, %{text}: %{x:+.2f}")
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    n, k = len({(r["target"], r["protocol"]) for r in rows}), len({r["variant"] for r in rows})
    # each outcome's row holds a band per variant (scattermode group): the figure grows with both, the legend
    # (two entries a variant) beside it
    fig.update_layout(scattermode="group", template="plotly_white", height=max(360, 160 + n * max(60, 22 * k), 50 * k),
                      width=1200, yaxis={"autorange": "reversed"}, legend={"yanchor": "top", "y": 1},
                      xaxis_title="difference, paired by seed (points: top-1 %, or the instrument x 100)",
                      title=f"Paired differences{f' ({family} outcomes)' if family else ''}: mean with t 95% "
                            "interval, and each seed")
    return fig


def compare_figure(table: list[dict], instruments: bool = False):
    """Bars of top-1 mean +- std per target/protocol, one colour per variant; with `instruments`, the style
    instruments' rows instead (is_instrument; their values x 100)."""
    import plotly.colors
    import plotly.graph_objects as go

    table = [r for r in table if is_instrument(r["protocol"]) == instruments]
    fig = go.Figure(layout={"colorway": plotly.colors.qualitative.Dark24})  # ablation sweeps exceed 10 variants
    for variant in dict.fromkeys(r["variant"] for r in table):
        rs = [r for r in table if r["variant"] == variant]
        fig.add_bar(name=variant, x=[f"{r['target']} / {r['protocol']}" for r in rs], y=[r["top1_mean"] for r in rs],
                    error_y={"type": "data", "array": [r["top1_std"] for r in rs]})
    n_groups = len({(r["target"], r["protocol"]) for r in table})
    fig.update_layout(barmode="group", template="plotly_white", xaxis_tickangle=-35, height=520,
                      yaxis_title="instrument x 100 (cosine, chance-corrected decodability, shape bias)" if instruments
                      else "top-1 (%)", width=max(1000, 110 * n_groups),
                      title=f"SASSL vs baseline{': style instruments' if instruments else ''} (mean +- std over seeds)")
    return fig
