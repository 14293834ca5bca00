"""Published figures and glasskit's side by side (notebook 07): TIGER's Table 1 on the S3-Rec
Amazon sets, as the dataset's README quotes it, and how far an item's content tells it apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from glasskit.analysis.run_tables import row_name
from glasskit.analysis.significance import per_user_metric
from glasskit.data import Dataset, window_bounds
from glasskit.pipeline import retrieval_lengths
from glasskit.runs import Run
from glasskit.tokenize import SidTable

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
        base = row_name(label)  # tiger [embed.method=...] and tiger (paper preset) are TIGER
        for metric in METRICS:
            values = np.array([r.metrics()["test"][ranking][metric] for r in members])
            ref = paper.get(base, {}).get(metric, np.nan)
            out.append({"row": label, "metric": metric.replace("hit", "recall"), "paper": ref,
                        "glasskit": values.mean(),
                        "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                        "seeds": len(values), "ratio": values.mean() / ref if np.isfinite(ref) else np.nan})
    return pd.DataFrame(out).set_index(["row", "metric"]).round(4)


def _targets(ds: Dataset, split: str = "test") -> np.ndarray:
    """The item index of every target of ``split``, in the split's order."""
    samples = ds.splits[split]
    return ds.seqs.items[ds.seqs.offsets[samples.user] + samples.t]


def _code_groups(table: SidTable) -> np.ndarray:
    """A group label per item: items with the same semantic codes (collision level left out)
    share one."""
    return np.unique(table.semantic_codes(), axis=0, return_inverse=True)[1].ravel()


def _ties(group: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """For a group label per item: the share of items, and of ``targets``, in a group of two or
    more."""
    counts = np.bincount(group)
    size = counts[group]
    return {"groups": int((counts > 0).sum()), "largest group": int(counts.max()),
            "items sharing it": float((size > 1).mean()),
            "test targets sharing it": float((size[targets] > 1).mean()),
            "median group of a test target": float(np.median(size[targets]))}


def content_ties(ds: Dataset, table: SidTable) -> pd.DataFrame:
    """How well the items' content separates them, per key: the item text (S3-Rec: the
    attribute ids) and the semantic codes without the collision level. Items with the same
    text get the same embedding, hence the same semantic codes, and only the collision level
    (an arbitrary index, learnt from interactions alone) tells them apart."""
    targets = _targets(ds)
    rows = {"content (item text)": _ties(pd.factorize(pd.Series(ds.texts()))[0], targets),
            "semantic codes": _ties(_code_groups(table), targets)}
    return pd.DataFrame(rows).T.assign(items=ds.seqs.n_items)


def collision_baselines(ds: Dataset, table: SidTable) -> dict[str, float]:
    """How often rules that read no history name a test target's collision code when given its
    true semantic codes: the item of the target's group with the most training interactions
    (ties at random, as an expected share), collision index 0, and a uniform guess within the
    group. A model's teacher-forced accuracy at the collision level (``acc`` in metrics.json)
    near these says it learnt little there beyond a popularity prior."""
    if table.codes.shape[1] == table.semantic_levels:
        raise ValueError("collision_baselines needs a collision level (tokenizer.collisions: "
                         "dedup); this SID table keeps colliding codes as they are")
    targets, group = _targets(ds), _code_groups(table)
    trained = np.bincount(ds.training_interactions()[1], minlength=ds.seqs.n_items)
    most = np.zeros(group.max() + 1, dtype=trained.dtype)
    np.maximum.at(most, group, trained)
    is_most = trained == most[group]
    n_most = np.bincount(group, weights=is_most)
    g = group[targets]
    return {"test targets": len(targets),
            "most trained item of the group": float(np.mean(is_most[targets] / n_most[g])),
            "collision index 0": float(np.mean(table.codes[targets, -1] == 0)),
            "uniform within the group": float(np.mean(1 / np.bincount(group)[g]))}


def validation_to_test(ds: Dataset, ranks: dict[str, np.ndarray], metric: str = "hit@10",
                       ranking: str = "unmasked", edges: tuple[int, ...] = (5, 20)) -> pd.DataFrame:
    """A run's ``metric`` on the validation and on the test targets, per bucket of the target's
    training interactions (``edges`` split them: < 5, 5-19, >= 20 by default), read from its
    per-user results (``Run.ranks()``). Beside each split's share of targets in the bucket: the
    test/validation ratio, and a last row with the test buckets reweighted to the validation
    mix. Where the test targets are colder than the validation targets, that row says how much of
    the drop from validation to test the mix explains; the rest is a drop within the buckets."""
    if not edges or any(a >= b for a, b in zip((0, *edges), edges)):
        raise ValueError(f"edges must be increasing positive interaction counts, e.g. (5, 20), "
                         f"got {edges!r}")
    trained = np.bincount(ds.training_interactions()[1], minlength=ds.seqs.n_items)
    labels = [f"< {edges[0]}", *(f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])), f">= {edges[-1]}"]
    cols = {}
    for split in ("valid", "test"):
        if f"{split}_users" not in ranks or f"{split}_{ranking}" not in ranks:
            raise ValueError(f"the per-user results hold {sorted(ranks)}, not {split}_users and "
                             f"{split}_{ranking}: pass a run's ranks() and a ranking it was "
                             "evaluated in (masked or unmasked)")
        users = ds.splits[split].user
        order = np.argsort(users)
        at = np.searchsorted(users, ranks[f"{split}_users"], sorter=order).clip(max=len(users) - 1)
        if not np.array_equal(users[order[at]], ranks[f"{split}_users"]):
            raise ValueError(f"the per-user results name {split} users this dataset does not "
                             "have: they come from a run on other data")
        bucket = np.digitize(trained[_targets(ds, split)[order[at]]], edges)
        value = per_user_metric(ranks[f"{split}_{ranking}"], metric)
        share = np.bincount(bucket, minlength=len(labels)) / len(bucket)
        mean = [value[bucket == b].mean() if (bucket == b).any() else np.nan
                for b in range(len(labels))]
        cols[split] = (share, np.array(mean), value.mean())
    (vs, vm, vall), (ts, tm, tall) = cols["valid"], cols["test"]
    table = pd.DataFrame({"valid share": vs, f"valid {metric}": vm, "test share": ts,
                          f"test {metric}": tm}, index=labels)
    table.loc["all"] = [1.0, vall, 1.0, tall]
    table.loc["test at the validation mix"] = [1.0, vall, 1.0, np.where(vs > 0, vs * tm, 0.0).sum()]
    table["test / valid"] = table[f"test {metric}"] / table[f"valid {metric}"]
    return table.rename_axis(f"target's training interactions ({ranking})")


def long_history_reach(ds: Dataset, table: SidTable) -> dict[str, float]:
    """What GLASS's long-history modules have to work with at the test position: the share of
    users with any history beyond the ``short_len`` window, its mean length, and the share of
    test samples whose semantic hard search (§4.3: long-history items sharing the target's first
    code) retrieves nothing, with the mean retrieved length. Where both are near 0, GLASS is
    TIGER with SID-Tier for almost every user."""
    test = ds.splits["test"]
    _, _, start, end = window_bounds(ds.seqs, test, ds.short_len, ds.long_max)
    retrieved = retrieval_lengths(ds, table.first)
    return {"test users": len(test), "short window": ds.short_len,
            "users with a long history": float((end > start).mean()),
            "mean long history": float((end - start).mean()),
            "search retrieves nothing": float((retrieved == 0).mean()),
            "mean retrieved": float(retrieved.mean())}
