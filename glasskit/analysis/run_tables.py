"""Tables and figures read from the run store (notebooks 03 onwards)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from glasskit.runs import Run


def training_curves(run: Run) -> go.Figure:
    h = pd.DataFrame(run.metrics()["history"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation"))
    fig.add_trace(go.Scatter(x=h["epoch"], y=h["loss"], name="loss"), row=1, col=1)
    for key in ("valid_ndcg@10", "valid_hit@10"):
        fig.add_trace(go.Scatter(x=h["epoch"], y=h[key], name=key.removeprefix("valid_")),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return fig.update_layout(title=f"{run.info['name']}")


def ranking_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Hit@K and NDCG@K, masked and unmasked (the primary one first)."""
    primary = metrics["primary"]
    order = [primary, "unmasked" if primary == "masked" else "masked"]
    rows = {}
    for ranking in order:
        m = metrics[split][ranking]
        label = f"{ranking}{' (primary)' if ranking == primary else ''}"
        rows[label] = {k: v for k, v in m.items() if "@" in k}
    df = pd.DataFrame(rows).T
    cols = sorted(df.columns, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    return df[cols].round(4)


def level_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Per SID level: teacher-forced accuracy, inference precision, CRP, beam hit, Hrecall."""
    m = metrics[split][metrics["primary"]]
    n = len(m["acc"])
    return pd.DataFrame({
        "acc_i (teacher forced)": m["acc"],
        "P_i (greedy)": m["precision"],
        "CRP_d": m["crp"],
        "|E_d|": m["crp_eligible"],
        "prefix hit in beam | E_d": m["crp_hit"],
        "Hrecall@level": m["hrecall"],
    }, index=pd.Index(np.arange(1, n + 1), name="level")).round(4)
