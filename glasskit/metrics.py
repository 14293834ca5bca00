"""Metrics shared by every model: Hit@K, NDCG@K, CRP (GLASS eq. 14-16), per-level teacher-forced
accuracy acc_i and inference precision P_i (GLASS §5.3), hierarchical recall (GEMs §4.2)."""

from __future__ import annotations

import numpy as np


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray,
                    ks: tuple[int, ...] = (1, 3, 5, 10, 20)) -> dict[str, float]:
    """``ranked`` (n, K) item ids best first (-1 = empty slot); ``targets`` (n,).
    Binary relevance with one relevant item: Hit@k = 1 if the target is in the top k;
    NDCG@k = 1 / log2(rank + 1) for a 1-based rank <= k, else 0 (the ideal DCG is 1)."""
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or len(ranked) != len(targets):
        raise ValueError(f"ranked must be (n, K) with n = len(targets); got {ranked.shape} "
                         f"and {targets.shape}")
    if len(targets) == 0:
        raise ValueError("no samples to evaluate")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"K={max(ks)} exceeds the {ranked.shape[1]} ranked items")
    rank = target_ranks(ranked, targets).astype(float)
    rank[rank == 0] = np.inf  # absent
    out: dict[str, float] = {}
    for k in ks:
        hit = rank <= k
        out[f"hit@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.where(hit, rank, 1) + 1), 0.0).mean())
    return out


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) int32: the 1-based position of each target in its ranked list, 0 when absent."""
    match = np.asarray(ranked) == np.asarray(targets)[:, None]
    return np.where(match.any(1), match.argmax(1) + 1, 0).astype(np.int32)


def crp(beams: list[np.ndarray], targets: np.ndarray) -> dict[str, list[float | int | None]]:
    """Conditional Rank Progression (GLASS eq. 14-16).

    ``beams[d]`` (n, B, d+1): the B prefixes kept at depth d+1, best first; ``targets`` (n, L).
    H_d = 1 when the ground-truth prefix of length d+1 is in the beam. E_d = samples with
    H_1..H_{d-1} all 1 (E_1 = all). CRP_d averages the 1-based rank of the ground-truth prefix
    over the samples of E_d whose prefix is in B_d (a sample whose prefix fell out of the beam
    has no rank; their share is ``1 - hit[d]``). Returns ``crp`` (None where no eligible sample
    hit: undefined, as ``null`` in metrics.json), ``eligible`` = |E_d| and ``hit`` = share of E_d
    with H_d = 1 (None where E_d is empty).
    """
    targets = np.asarray(targets)
    n = len(targets)
    eligible = np.ones(n, dtype=bool)
    out: dict[str, list[float | int | None]] = {"crp": [], "eligible": [], "hit": []}
    for d, b in enumerate(beams):
        b = np.asarray(b)
        match = (b == targets[:, None, : d + 1]).all(2)  # (n, B)
        h = match.any(1)
        rank = match.argmax(1) + 1
        e = int(eligible.sum())
        sel = eligible & h
        out["eligible"].append(e)
        out["hit"].append(float(sel.sum() / e) if e else None)
        out["crp"].append(float(rank[sel].mean()) if sel.any() else None)
        eligible = sel
    return out


def hierarchical_recall(beams: list[np.ndarray], targets: np.ndarray) -> list[float]:
    """Hrecall@Level_l@B (GEMs §4.2): share of all samples whose ground-truth prefix of length
    l is among the B prefixes kept at level l."""
    targets = np.asarray(targets)
    return [float((np.asarray(b) == targets[:, None, : d + 1]).all(2).any(1).mean())
            for d, b in enumerate(beams)]


def level_accuracy(logits_argmax: np.ndarray, targets: np.ndarray) -> list[float]:
    """acc_i: teacher-forced accuracy of the code at each level (argmax over the level's codes)."""
    return [float(v) for v in (np.asarray(logits_argmax) == np.asarray(targets)).mean(0)]


def inference_precision(greedy: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """P_i (GLASS §5.3): with top-1 decoding, P(code i right | codes before i right); None
    (undefined) at a level no sample reached with every earlier code right."""
    right = np.asarray(greedy) == np.asarray(targets)
    prefix_ok = np.cumprod(right, axis=1).astype(bool)
    out: list[float | None] = []
    before = np.ones(len(right), dtype=bool)
    for i in range(right.shape[1]):
        out.append(float(prefix_ok[before, i].mean()) if before.any() else None)
        before = prefix_ok[:, i]
    return out
