"""Gates and attention streams (GLASS §5.4 Figure 4; GEMs §4.5 Figure 4): pure functions over
the tables of :mod:`glasskit.analysis.trace` (which runs the models), and their figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

DEFAULT_EDGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def length_bins(lengths: np.ndarray, edges: tuple[int, ...] = DEFAULT_EDGES) -> pd.Series:
    """Label of the bin [lo, hi) holding each length (the last bin is open: "512+"; 0 is its
    own bin). The same edges give the same labels whatever the data, so tables of several
    configurations line up."""
    lengths = np.asarray(lengths)
    labels = [f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]
    labels.append(f"{edges[-1]}+")
    i = np.searchsorted(np.asarray(edges), lengths, side="right") - 1
    return pd.Series(pd.Categorical([labels[k] if k >= 0 else "0" for k in i],
                                    categories=["0", *labels], ordered=True))


def gate_by_length(lengths: np.ndarray, gates: np.ndarray,
                   edges: tuple[int, ...] = DEFAULT_EDGES) -> pd.DataFrame:
    """Average gate value per retrieved-length bin (GLASS Figure 4), with its standard deviation
    and the number of (beam, layer) values in the bin, so that sparse bins are visible; bins
    without values are left out."""
    df = pd.DataFrame({"bin": length_bins(lengths, edges), "gate": np.asarray(gates, float),
                       "length": np.asarray(lengths)})
    out = df.groupby("bin", observed=True).agg(mean_gate=("gate", "mean"), std=("gate", "std"),
                                               count=("gate", "size"), mean_length=("length", "mean"))
    return out.reset_index()


def gate_trend(table: pd.DataFrame, min_count: int = 30) -> float:
    """Spearman correlation between bin order and mean gate over bins with at least
    ``min_count`` values: > 0 when the gate opens as more items are retrieved."""
    t = table[table["count"] >= min_count]
    if len(t) < 3:
        return float("nan")
    return float(pd.Series(np.arange(len(t))).corr(t["mean_gate"].reset_index(drop=True),
                                                   method="spearman"))


def stream_shares(gates: pd.DataFrame, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per level and layer: the retrieved stream's share of the context among beams that
    retrieved, g·|Z_ret| / ((1-g)·|Z_short| + g·|Z_ret|) averaged, the mean gate, and (with
    ``rows`` from the trace) the share of beams that retrieved anything; a beam that retrieved
    nothing listens to the short stream alone."""
    g = gates.assign(share=gates["ret_norm"] / (gates["short_norm"] + gates["ret_norm"]).clip(lower=1e-12))
    out = g.groupby(["level", "layer"]).agg(retrieved_share=("share", "mean"),
                                            mean_gate=("gate", "mean"), beams=("share", "size"))
    out = out.reset_index()
    if rows is not None:
        out = out.merge(rows, on=["level", "layer"], how="left")
        out["retrieving_share"] = out["retrieving"] / out["rows"]
        out["retrieved_share_all_beams"] = out["retrieved_share"] * out["retrieving_share"]
        out = out.drop(columns=["rows", "retrieving"])
    return out


def recency_profile(recency: pd.DataFrame, stream: str, layer: int | None = None) -> pd.Series:
    """Mean attention mass per beam on the items of each age (1 = most recent input) in one
    stream, over all layers (their mean) or one."""
    r = recency[recency["stream"] == stream]
    if layer is not None:
        r = r[r["layer"] == layer]
    layers = max(1, r["layer"].nunique())
    return r.groupby("age")["mass"].sum().div(layers).sort_index()


def gate_length_figure(tables: dict[str, pd.DataFrame]) -> go.Figure:
    """Mean gate per retrieved-length bin, one panel per configuration, the number of values per
    bin as bars on a second axis."""
    fig = make_subplots(rows=1, cols=len(tables), subplot_titles=list(tables),
                        specs=[[{"secondary_y": True}] * len(tables)])
    for i, t in enumerate(tables.values(), 1):
        fig.add_trace(go.Bar(x=t["bin"].astype(str), y=t["count"], name="values per bin",
                             marker_color="lightgray", showlegend=i == 1), row=1, col=i,
                      secondary_y=True)
        fig.add_trace(go.Scatter(x=t["bin"].astype(str), y=t["mean_gate"], mode="lines+markers",
                                 error_y={"type": "data", "array": t["std"].fillna(0)},
                                 name="mean gate", line_color="crimson", showlegend=i == 1),
                      row=1, col=i)
        fig.update_xaxes(title_text="retrieved items", row=1, col=i)
    fig.update_yaxes(title_text="average gate value", secondary_y=False)
    fig.update_yaxes(title_text="values", secondary_y=True, type="log")
    return fig.update_layout(title="gate value vs retrieved sequence length (inference)")


def gate_distribution_figure(gates: pd.DataFrame) -> go.Figure:
    """Gate values per SID level (0-based, the level predicted) and decoder layer."""
    fig = go.Figure()
    for (level, layer), g in gates.groupby(["level", "layer"]):
        fig.add_trace(go.Box(y=g["gate"], name=f"level {level}, layer {layer}", boxmean=True))
    return fig.update_layout(title="gate distribution per SID level and decoder layer",
                             yaxis_title="gate (mean over d)")


def stream_share_figure(shares: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for layer, s in shares.groupby("layer"):
        fig.add_trace(go.Bar(x=[f"level {v}" for v in s["level"]], y=s["retrieved_share"],
                             name=f"layer {layer}: beams that retrieved"))
        if "retrieved_share_all_beams" in s:
            fig.add_trace(go.Bar(x=[f"level {v}" for v in s["level"]],
                                 y=s["retrieved_share_all_beams"], name=f"layer {layer}: all beams"))
    return fig.update_layout(barmode="group", yaxis_title="retrieved stream's share of the context",
                             title="how much the decoder listens to the retrieved stream")


def recency_figure(recency: pd.DataFrame, max_age: int = 200) -> go.Figure:
    fig = go.Figure()
    for stream in ("short", "retrieved"):
        prof = recency_profile(recency, stream)
        prof = prof[prof.index <= max_age]
        if len(prof):
            fig.add_trace(go.Scatter(x=prof.index, y=prof.values, mode="lines+markers",
                                     name=f"{stream} stream"))
    return fig.update_layout(title="cross-attention mass by item age (1 = most recent input)",
                             xaxis_title="age", yaxis_title="mean attention per beam",
                             xaxis_type="log")


def gems_share_figure(shares: dict[str, pd.DataFrame]) -> go.Figure:
    """Each stream's share of the decoder's input (mean over layers and levels), one group of
    bars per fusion strategy."""
    fig = go.Figure()
    streams = ["recent", "mid", "lifecycle"]
    for fusion, t in shares.items():
        mean = t.groupby("stream")["share"].mean().reindex(streams).fillna(0.0)
        fig.add_trace(go.Bar(x=streams, y=mean.values, name=fusion))
    return fig.update_layout(barmode="group", yaxis_title="share of the decoder's input",
                             title="which stream the GEMs decoder listens to, by fusion (gems.md §4.5)")
