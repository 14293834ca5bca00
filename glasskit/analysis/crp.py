"""Conditional Rank Progression (GLASS §5.5, eq. 14-16) across runs: CRP per level, the rank
degradation between levels and the share of it hard search removes, hierarchical recall and
the P_i chain, all from the metrics the trainer records (``glasskit.metrics``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from glasskit.analysis.run_tables import group_runs
from glasskit.runs import Run


def level_frame(metrics: list[dict]) -> pd.DataFrame:
    """Mean and std over seeds, per level, of CRP, |E_d|, the hit share of E_d, hierarchical
    recall, P_i and acc_i; ``degradation`` is CRP_d - CRP_{d-1} (the rank lost at level d)."""
    keys = {"crp": "crp", "eligible": "crp_eligible", "hit": "crp_hit", "hrecall": "hrecall",
            "P_i": "precision", "acc_i": "acc"}
    levels = len(metrics[0]["crp"])
    rows = []
    for d in range(levels):
        row = {"level": d + 1, "seeds": len(metrics)}
        for name, key in keys.items():
            v = np.array([np.nan if m[key][d] is None else m[key][d] for m in metrics], float)
            row[name] = np.nanmean(v) if np.isfinite(v).any() else np.nan
            row[f"{name} std"] = np.nanstd(v, ddof=1) if np.isfinite(v).sum() > 1 else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    df["degradation"] = df["crp"].diff()
    return df


def crp_table(runs_by_row: dict[str, list[dict]]) -> pd.DataFrame:
    """One block of :func:`level_frame` per row label (e.g. tiger, sidtier+shs)."""
    return pd.concat({row: level_frame(ms) for row, ms in runs_by_row.items()},
                     names=["row"]).reset_index(level=0).reset_index(drop=True)


def degradation_removed(table: pd.DataFrame, base: str = "tiger",
                        other: str = "sidtier+shs") -> pd.DataFrame:
    """Per level d >= 2: the base's degradation, the other row's, and the share of the base's
    degradation the other removes, 1 - deg_other / deg_base (GLASS reports 22% at level 2 and
    31% at level 3 for hard search over TIGER). Undefined (NaN) where the base does not degrade."""
    a = table[table["row"] == base].set_index("level")["degradation"]
    b = table[table["row"] == other].set_index("level")["degradation"]
    out = pd.DataFrame({f"{base} degradation": a, f"{other} degradation": b}).iloc[1:]
    out["share removed"] = np.where(a.iloc[1:] > 0, 1 - b.iloc[1:] / a.iloc[1:], np.nan)
    return out.reset_index()


def metrics_by_row(runs: list[str | Run], split: str = "test") -> dict[tuple[str, str], list[dict]]:
    """(dataset, row label) -> the primary-ranking metrics of each finished seed."""
    return {key: [m[split][m["primary"]] for m in ms]
            for key, ms in group_runs(runs, split=split).items()}


def crp_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "CRP_d (mean rank of the gold prefix)", "hierarchical recall per level", "P_i (greedy)"))
    for row, t in table.groupby("row", sort=False):
        x = [f"L{v}" for v in t["level"]]
        fig.add_trace(go.Scatter(x=x, y=t["crp"], error_y={"array": t["crp std"].fillna(0)},
                                 mode="lines+markers", name=row, legendgroup=row), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=t["hrecall"], mode="lines+markers", name=row,
                                 legendgroup=row, showlegend=False), row=1, col=2)
        fig.add_trace(go.Scatter(x=x, y=t["P_i"], mode="lines+markers", name=row,
                                 legendgroup=row, showlegend=False), row=1, col=3)
    return fig.update_layout(title=title or "conditional rank progression at beam 20")
