"""Residual k-means (RQ-KMeans, as DualGR §2.2 and GEMs §4.3.3 use): level l clusters the
residual left by levels < l; an item's code at level l is its cluster there."""

from __future__ import annotations

import torch

from glasskit.tokenize.kmeans import kmeans


def rq_kmeans(x: torch.Tensor, sizes: list[int], seed: int = 0, iters: int = 50,
              balanced: bool = False) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Returns ``(codes (n, L), codebooks [(K_l, d)], reconstruction (n, d))``."""
    residual = x.clone()
    codes, books = [], []
    for level, k in enumerate(sizes):
        centroids, c = kmeans(residual, k, seed=seed + level, iters=iters, balanced=balanced)
        codes.append(c)
        books.append(centroids)
        residual = residual - centroids[c]
    return torch.stack(codes, 1), books, x - residual
