"""Seeded k-means (k-means++ initialisation, Lloyd iterations) in torch, optionally balanced.

Runs on whatever device the data is on. Balanced mode caps every cluster at ``ceil(n / k)``
points: points are assigned to their nearest centroid, over-full clusters keep their closest
points, and the released points try their next-nearest cluster with room, round after round.
"""

from __future__ import annotations

import math

import torch


def sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(n, k) squared Euclidean distances, without materialising an (n, k, d) tensor."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)[None, :]).clamp_min_(0)


def kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=gen, device="cpu").item()
    centres = [x[first]]
    d2 = sq_dists(x, x[first:first + 1]).squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: pick uniformly among the rest
            idx = torch.randint(n, (1,), generator=gen, device="cpu").item()
        else:
            probs = (d2 / total).cpu()
            idx = torch.multinomial(probs, 1, generator=gen).item()
        centres.append(x[idx])
        d2 = torch.minimum(d2, sq_dists(x, x[idx:idx + 1]).squeeze(1))
    return torch.stack(centres)


def balanced_assign(d: torch.Tensor) -> torch.Tensor:
    """Assign each row of the (n, k) distance matrix to a column, at most ceil(n/k) per column."""
    n, k = d.shape
    cap = math.ceil(n / k)
    assign = torch.full((n,), -1, dtype=torch.long, device=d.device)
    d = d.clone()
    room = torch.full((k,), cap, dtype=torch.long, device=d.device)
    while (assign < 0).any():
        free = (assign < 0).nonzero().squeeze(1)
        choice = d[free].argmin(1)
        for j in choice.unique().tolist():
            pts = free[choice == j]
            if len(pts) > room[j]:
                keep = pts[d[pts, j].argsort()[: int(room[j])]]
            else:
                keep = pts
            assign[keep] = j
            room[j] -= len(keep)
            if room[j] == 0:
                d[:, j] = float("inf")
    return assign


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50,
           balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` into ``k`` clusters. Returns ``(centroids (k, d), codes (n,))``."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = kmeans_pp(x, k, gen)
    codes = torch.zeros(n, dtype=torch.long, device=x.device)
    for it in range(iters):
        d = sq_dists(x, c)
        new = balanced_assign(d) if balanced else d.argmin(1)
        if it > 0 and torch.equal(new, codes):
            break
        codes = new
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, codes, x)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None])
        if empty.any():  # re-seed empty clusters on the points farthest from their centroid
            far = d.gather(1, codes[:, None]).squeeze(1).argsort(descending=True)
            c[empty] = x[far[: int(empty.sum())]]
    return c, codes
