"""SID-Tier features (GLASS §4.1, eq. 2-4) from the item × prototype cosine table.

For a long-term history H, ``t_a[i]`` counts the items of H whose cosine with prototype a falls
in tier i, the N tiers splitting [-1, 1] into equal widths (the last tier closed at 1). With the
cosine table precomputed, a sample's K0 × N features are one gather and one histogram: O(|H|·K0).
"""

from __future__ import annotations

import numpy as np


def tier_index(cos: np.ndarray, tiers: int) -> np.ndarray:
    """Tier of each cosine in [-1, 1]: floor((c + 1) / 2 · N), with c = 1 in the last tier."""
    return np.minimum(((cos + 1.0) * 0.5 * tiers).astype(np.int64), tiers - 1).clip(0)


def sid_tier_counts(cos_table: np.ndarray, items: np.ndarray, starts: np.ndarray,
                    ends: np.ndarray, tiers: int) -> np.ndarray:
    """(B, K0, N) counts for the histories ``items[starts[b]:ends[b]]``."""
    B, k0 = len(starts), cos_table.shape[1]
    lengths = ends - starts
    total = int(lengths.sum())
    out = np.zeros(B * k0 * tiers, dtype=np.float32)
    if total:
        offs = np.cumsum(lengths) - lengths
        pos = np.repeat(starts - offs, lengths) + np.arange(total)
        t = tier_index(cos_table[items[pos]], tiers)  # (total, K0)
        row = np.repeat(np.arange(B), lengths)
        flat = (row[:, None] * k0 + np.arange(k0)[None, :]) * tiers + t
        out = np.bincount(flat.ravel(), minlength=B * k0 * tiers).astype(np.float32)
    return out.reshape(B, k0, tiers)
