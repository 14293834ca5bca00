"""Plotly figures and tables for notebook 02 (tokenization)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from glasskit.tokenize import SidTable


def code_usage(table: SidTable) -> go.Figure:
    frames = []
    for level in range(table.semantic_levels):
        counts = np.sort(np.bincount(table.codes[:, level], minlength=table.sizes[level]))[::-1]
        frames.append(pd.DataFrame({"code rank": np.arange(len(counts)), "items": counts,
                                    "level": f"level {level} (K={table.sizes[level]})"}))
    return px.bar(pd.concat(frames), x="code rank", y="items", facet_col="level",
                  title="codebook usage per level (codes sorted by item count)").update_xaxes(
                      matches=None)


def first_buckets(table: SidTable) -> go.Figure:
    counts = np.bincount(table.first, minlength=table.sizes[0])
    df = pd.DataFrame({"first code": np.arange(len(counts)), "items": counts})
    return px.bar(df, x="first code", y="items", title="items per first-level code")


def retrieved_lengths(study: dict[int, np.ndarray]) -> go.Figure:
    df = pd.concat([pd.DataFrame({"retrieved length": v, "first-level size": f"K0={k}"})
                    for k, v in study.items()])
    fig = px.box(df, x="first-level size", y="retrieved length", points=False,
                 title="long-history items sharing the target's first code (test samples)")
    means = {f"K0={k}": v.mean() for k, v in study.items()}
    fig.add_trace(go.Scatter(x=list(means), y=list(means.values()), mode="markers+text",
                             text=[f"mean {m:.1f}" for m in means.values()],
                             textposition="top center", name="mean"))
    return fig


def retrieved_summary(study: dict[int, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({
        f"K0={k}": {"mean": v.mean(), "median": np.median(v), "zero share": (v == 0).mean(),
                    "share below 5": (v < 5).mean()}
        for k, v in study.items()}).T.round(3)


def bucket_examples(table: SidTable, texts: list[str], buckets: int = 4, per_bucket: int = 8,
                    seed: int = 0) -> pd.DataFrame:
    """A few first-level buckets (chosen at random among those with enough items) with titles."""
    counts = np.bincount(table.first, minlength=table.sizes[0])
    eligible = np.flatnonzero(counts >= 3)
    pick = np.random.default_rng(seed).choice(eligible, size=min(buckets, len(eligible)),
                                              replace=False)
    rows = []
    for code in sorted(pick.tolist()):
        members = np.flatnonzero(table.first == code)[:per_bucket]
        rows += [{"first code": code, "SID": tuple(table.codes[i].tolist()), "item": texts[i]}
                 for i in members]
    return pd.DataFrame(rows)
