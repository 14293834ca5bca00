"""Published figures and glasskit's side by side (notebook 07): TIGER's Table 1 on the S3-Rec
Amazon sets, as the dataset's README quotes it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from glasskit.runs import Run

# Rajput et al. (2023), Table 1: leave-one-out, full catalogue, unmasked; Recall@K = Hit@K here
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "Sports_and_Outdoors": {
        "sasrec": {"hit@5": 0.0233, "ndcg@5": 0.0154, "hit@10": 0.0350, "ndcg@10": 0.0192},
        "tiger": {"hit@5": 0.0264, "ndcg@5": 0.0181, "hit@10": 0.0400, "ndcg@10": 0.0225},
    },
    "Toys_and_Games": {
        "sasrec": {"hit@5": 0.0463, "ndcg@5": 0.0306, "hit@10": 0.0675, "ndcg@10": 0.0374},
        "tiger": {"hit@5": 0.0521, "ndcg@5": 0.0371, "hit@10": 0.0712, "ndcg@10": 0.0432},
    },
}
METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


def reproduction_table(runs: dict[str, list[Run]], dataset: str, ranking: str = "unmasked"
                       ) -> pd.DataFrame:
    """One row per (row label, metric): the paper's figure for the row's model (NaN where it
    reports none: GLASS rows, other datasets), glasskit's
    test mean ± sample std over the row's seeds in ``ranking`` (the published protocol is
    unmasked), and glasskit / paper."""
    paper = PUBLISHED.get(dataset, {})
    out = []
    for label, members in runs.items():
        base = label.split(" [")[0].split(" (")[0]  # tiger [embed.method=...] is still TIGER
        for metric in METRICS:
            values = np.array([r.metrics()["test"][ranking][metric] for r in members])
            ref = paper.get(base, {}).get(metric, np.nan)
            out.append({"row": label, "metric": metric.replace("hit", "recall"), "paper": ref,
                        "glasskit": values.mean(),
                        "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                        "seeds": len(values), "ratio": values.mean() / ref if np.isfinite(ref) else np.nan})
    return pd.DataFrame(out).set_index(["row", "metric"]).round(4)
