"""Plotly figures for notebook 01 (data preparation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from glasskit.data import Dataset, window_bounds


def history_lengths(ds: Dataset) -> go.Figure:
    df = pd.DataFrame({"interactions per user": ds.seqs.lengths})
    fig = px.histogram(df, x="interactions per user", nbins=60, log_y=True,
                       title=f"{ds.raw.name}: history length per user")
    fig.add_vline(x=ds.short_len + 2, line_dash="dash",
                  annotation_text=f"short window ({ds.short_len}) + valid + test")
    return fig


def long_history_lengths(ds: Dataset) -> go.Figure:
    frames = []
    for split in ("train", "test"):
        _, _, ls, le = window_bounds(ds.seqs, ds.splits[split], ds.short_len, ds.long_max)
        frames.append(pd.DataFrame({"long-term history length": le - ls, "split": split}))
    df = pd.concat(frames)
    return px.histogram(df, x="long-term history length", color="split", nbins=60,
                        barmode="overlay", histnorm="probability", opacity=0.6,
                        title=f"long-term history per sample (short_len={ds.short_len}, "
                              f"long_max={ds.long_max})")


def interactions_over_time(ds: Dataset) -> go.Figure:
    ts = pd.to_datetime(pd.Series(ds.seqs.timestamps), unit="s")
    counts = ts.dt.to_period("W").value_counts().sort_index()
    df = pd.DataFrame({"week": counts.index.to_timestamp(), "interactions": counts.to_numpy()})
    return px.bar(df, x="week", y="interactions", title="interactions per week")


def item_popularity(ds: Dataset) -> go.Figure:
    counts = np.sort(np.bincount(ds.seqs.items, minlength=ds.seqs.n_items))[::-1]
    df = pd.DataFrame({"item rank": np.arange(1, len(counts) + 1), "interactions": counts})
    fig = px.line(df, x="item rank", y="interactions", log_x=True, log_y=True,
                  title="item popularity (rank-frequency)")
    top = counts[: max(1, len(counts) // 10)].sum() / max(1, counts.sum())
    fig.add_annotation(x=0.5, y=0.95, xref="paper", yref="paper", showarrow=False,
                       text=f"top 10% of items hold {top:.0%} of interactions")
    return fig
