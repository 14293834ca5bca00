"""Is a difference between two rows real? Paired tests over the users both rows ranked.

Per seed, the Wilcoxon signed-rank test on the per-user metric (normal approximation with the
tie correction; users whose two values are equal are dropped, Wilcoxon's convention), its
z-scores combined over seeds by Stouffer's method (each seed is an independent replicate, with
equal weight); the effect is the mean per-user difference, averaged over seeds, with a paired
bootstrap confidence interval (users resampled, the same resample for every seed); Holm's
step-down adjustment over the rows compared with one reference. Pure numpy: nothing trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """``hit@k`` or ``ndcg@k`` per sample from the 1-based rank of its target (0 = not in the
    ranked list), as glasskit.metrics.ranking_metrics computes them."""
    kind, _, k = metric.partition("@")
    if kind not in ("hit", "ndcg") or not k.isdigit():
        raise ValueError(f"metric must be hit@K or ndcg@K, got {metric!r}")
    ranks = np.asarray(ranks)
    hit = (ranks >= 1) & (ranks <= int(k))
    if kind == "hit":
        return hit.astype(float)
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1) + 1), 0.0)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


@dataclass
class Wilcoxon:
    w_plus: float  # sum of the ranks of the positive differences
    n: int  # non-zero differences
    z: float  # signed: > 0 when the first sample is larger
    p: float  # two-sided


def wilcoxon(a: np.ndarray, b: np.ndarray) -> Wilcoxon:
    """Wilcoxon signed-rank test of ``a - b`` (paired): zero differences dropped, normal
    approximation with the tie correction, no continuity correction (scipy's
    ``wilcoxon(a, b, zero_method="wilcox", correction=False, method="approx")``)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"expected two paired 1-D samples, got shape {d.shape}")
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return Wilcoxon(0.0, 0, 0.0, 1.0)
    r = average_ranks(np.abs(d))
    w_plus = float(r[d > 0].sum())
    _, ties = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - float((ties ** 3 - ties).sum()) / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var) if var > 0 else 0.0
    return Wilcoxon(w_plus, n, z, two_sided_p(z))


def two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def stouffer(z: list[float]) -> float:
    """Stouffer's combined z of independent z-scores (equal weights)."""
    if not z:
        raise ValueError("no z-scores to combine")
    return float(np.sum(z) / math.sqrt(len(z)))


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the m tests), in the input
    order: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def bootstrap_ci(diff: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diff`` (seeds × users): users resampled
    with replacement, the same resample in every seed."""
    diff = np.atleast_2d(np.asarray(diff, dtype=float))
    per_user = diff.mean(0)
    rng = np.random.default_rng(seed)
    n = per_user.shape[0]
    means = np.empty(n_boot)
    for i in range(0, n_boot, 200):  # in blocks: (200, n) indices at a time
        idx = rng.integers(0, n, size=(min(200, n_boot - i), n))
        means[i:i + len(idx)] = per_user[idx].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class PairedResult:
    effect: float  # mean over seeds and users of row - reference
    ci: tuple[float, float]  # 95% paired bootstrap interval of the effect
    z: float  # Stouffer-combined Wilcoxon z over seeds (> 0: the row is higher)
    p: float  # two-sided, before any adjustment
    seeds: list[int]
    users: int
    agree: int  # seeds whose own mean difference has the effect's sign (0 when the effect is 0)


def paired_test(row: dict[int, np.ndarray], reference: dict[int, np.ndarray]) -> PairedResult:
    """``row`` and ``reference``: seed -> the per-user metric (users in the same order). The
    seeds both have are paired; each seed's Wilcoxon z is combined by Stouffer. The test holds
    each trained model fixed: ``agree`` counts the seeds that retraining gave the same sign."""
    seeds = sorted(set(row) & set(reference))
    if not seeds:
        raise ValueError(f"no seed in common: row {sorted(row)}, reference {sorted(reference)}")
    shapes = {np.shape(row[s]) for s in seeds} | {np.shape(reference[s]) for s in seeds}
    if len(shapes) != 1:
        raise ValueError(f"the rows ranked different numbers of users: {sorted(shapes)}")
    diff = np.stack([np.asarray(row[s], float) - np.asarray(reference[s], float) for s in seeds])
    z = stouffer([wilcoxon(row[s], reference[s]).z for s in seeds])
    effect = float(diff.mean())
    agree = int((np.sign(diff.mean(1)) == np.sign(effect)).sum()) if effect else 0
    return PairedResult(effect, bootstrap_ci(diff), z, two_sided_p(z), seeds, diff.shape[1], agree)
