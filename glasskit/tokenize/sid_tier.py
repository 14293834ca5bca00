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
                    ends: np.ndarray, tiers: int, chunk: int = 65536) -> np.ndarray:
    """(B, K0, N) counts for the histories ``items[starts[b]:ends[b]]``, in blocks of ``chunk``
    history items so memory stays O(chunk · K0) however long the histories are."""
    B, k0 = len(starts), cos_table.shape[1]
    lengths = ends - starts
    total = int(lengths.sum())
    out = np.zeros(B * k0 * tiers, dtype=np.int64)
    if total:
        offs = np.cumsum(lengths) - lengths
        pos = np.repeat(starts - offs, lengths) + np.arange(total)
        row = np.repeat(np.arange(B), lengths)
        base = np.arange(k0)[None, :] * tiers
        for a in range(0, total, chunk):
            t = tier_index(cos_table[items[pos[a:a + chunk]]], tiers)  # (chunk, K0)
            flat = row[a:a + chunk, None] * (k0 * tiers) + base + t
            out += np.bincount(flat.ravel(), minlength=B * k0 * tiers)
    return out.astype(np.float32).reshape(B, k0, tiers)
