"""A seeded synthetic dataset whose long history carries what the recent window lacks.

The generative process (all draws from one ``numpy`` generator seeded with ``seed``):

1. **Items.** ``items`` items are spread round-robin over ``clusters`` coarse clusters, and
   inside each cluster over ``fine_per_cluster`` fine groups, so item ``i`` has a coarse
   cluster ``c(i)`` and a fine group ``f(i)``.
2. **Embeddings** (shipped with the data, so tokenizers can recover the structure): a random
   unit centre per cluster, a random unit direction per (cluster, fine group), and
   ``e_i = normalise(2·centre[c(i)] + direction[c(i), f(i)] + 0.1·noise)``.
3. **Coarse dynamics (the recent-window signal).** Every cluster has ``successors`` fixed
   successor clusters. A user's next event moves to a uniformly chosen successor of the
   current cluster with probability 0.8 and jumps to a uniform cluster otherwise, so the
   recent window predicts the *coarse* part (the first semantic code) of the next item.
4. **Persistent fine preferences (the long-history signal).** Each user has, for every
   cluster, one preferred fine group drawn uniformly. An event in cluster ``c`` uses the
   preferred group with probability ``p_preferred`` and a uniform group otherwise; the item
   is uniform inside the group. Which group a user prefers in the target's cluster is written
   only in the user's earlier events *in that cluster*, and with many clusters those are
   mostly outside the recent window: looking up the past items that share the target's
   coarse cluster (GLASS's semantic hard search) predicts the fine part.
5. **Lengths** are log-uniform in ``[min_len, max_len]`` (tens up to 100,000); timestamps are
   strictly increasing per user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from glasskit.config import SyntheticConfig
from glasskit.data.raw import RawData


def generate(cfg: SyntheticConfig, seed: int = 0) -> RawData:
    cfg.validate()
    rng = np.random.default_rng(seed)
    n_c, n_f = cfg.clusters, cfg.fine_per_cluster

    item = np.arange(cfg.items)
    group = item % (n_c * n_f)  # round-robin over (cluster, fine) groups
    cluster, fine = group // n_f, group % n_f
    members = [item[group == g] for g in range(n_c * n_f)]
    group_size = np.array([len(m) for m in members])
    group_start = np.concatenate([[0], np.cumsum(group_size)[:-1]])
    by_group = np.concatenate(members)

    centre = _unit(rng.normal(size=(n_c, cfg.dim)))
    direction = _unit(rng.normal(size=(n_c, n_f, cfg.dim)))
    emb = _unit(2.0 * centre[cluster] + direction[cluster, fine]
                + 0.1 * rng.normal(size=(cfg.items, cfg.dim))).astype(np.float32)

    succ = np.stack([rng.choice(n_c, size=cfg.successors, replace=False) for _ in range(n_c)])
    preferred = rng.integers(0, n_f, size=(cfg.users, n_c))
    lengths = np.exp(rng.uniform(np.log(cfg.min_len), np.log(cfg.max_len) + 1e-9,
                                 size=cfg.users)).astype(np.int64).clip(cfg.min_len, cfg.max_len)

    # Walk every user's coarse chain at once, one time step per iteration.
    steps = int(lengths.max())
    clusters = np.empty((cfg.users, steps), dtype=np.int64)
    clusters[:, 0] = rng.integers(0, n_c, size=cfg.users)
    move = rng.random((cfg.users, steps)) < 0.8
    pick = rng.integers(0, cfg.successors, size=(cfg.users, steps))
    jump = rng.integers(0, n_c, size=(cfg.users, steps))
    for t in range(1, steps):
        clusters[:, t] = np.where(move[:, t], succ[clusters[:, t - 1], pick[:, t]], jump[:, t])

    mask = np.arange(steps)[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(cfg.users)[:, None], mask.shape)[mask]
    c = clusters[mask]
    use_pref = rng.random(len(c)) < cfg.p_preferred
    f = np.where(use_pref, preferred[users, c], rng.integers(0, n_f, size=len(c)))
    g = c * n_f + f
    items = by_group[group_start[g] + (rng.random(len(c)) * group_size[g]).astype(np.int64)]
    pos = np.broadcast_to(np.arange(steps)[None, :], mask.shape)[mask]
    start = rng.integers(1_000_000_000, 1_100_000_000, size=cfg.users)
    timestamps = start[users] + 60 * pos

    interactions = pd.DataFrame({"user": users, "item": items, "timestamp": timestamps})
    item_table = pd.DataFrame({
        "item": item,
        "title": [f"item {i}" for i in item],
        "genres": [f"cluster {a} group {b}" for a, b in zip(cluster, fine)],
        "cluster": cluster,
        "fine": fine,
    })
    return RawData("synthetic", interactions, item_table, embeddings=(item, emb))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
