"""The SID table: item codes, collisions, the prefix index used by constrained decoding, and
GLASS's first-level structures (prototypes, item × prototype cosines, neighbour codes).

Collisions: with ``collisions="dedup"`` (the default, as TIGER and GRID do) a last level is
appended that numbers the items sharing a semantic ID (0, 1, ... in item-index order), so every
item has a unique SID and a decoded SID names exactly one item. With ``collisions="keep"`` one
SID may name several items; they are ranked deterministically by item index when expanded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glasskit.errors import GlasskitError
from glasskit.io import fingerprint, save_npz


@dataclass
class SidTable:
    codes: np.ndarray  # (n_items, L) int64; with dedup the last column is the dedup level
    sizes: list[int]  # codebook size of every level (dedup level included)
    semantic_levels: int  # levels produced by the quantizer (excludes the dedup level)
    codebooks: list[np.ndarray]  # code vectors of the semantic levels [(K_l, d)]
    method: str
    collisions: str  # "dedup" or "keep"
    recon_error: float  # mean squared reconstruction error of the item embeddings

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def first(self) -> np.ndarray:
        return self.codes[:, 0]

    def semantic_codes(self) -> np.ndarray:
        return self.codes[:, : self.semantic_levels]

    def index(self, device: str | torch.device = "cpu") -> PrefixIndex:
        return PrefixIndex(self.codes, self.sizes, device)

    def fingerprint(self) -> str:
        """A digest of the codes and codebooks: what a model trained on this table depends on.
        The tokenizer's training is float arithmetic, so another processor or kernel setting
        can give another table for the same embeddings (glasskit.runs pins a run's own)."""
        return fingerprint(self.codes.astype(np.int64), np.asarray(self.sizes, dtype=np.int64),
                           *self.codebooks)

    def save(self, path) -> None:
        save_npz(path, codes=self.codes, sizes=np.asarray(self.sizes),
                 semantic_levels=np.asarray(self.semantic_levels),
                 method=np.asarray(self.method), collisions=np.asarray(self.collisions),
                 recon_error=np.asarray(self.recon_error),
                 **{f"codebook{i}": b for i, b in enumerate(self.codebooks)})

    @classmethod
    def load(cls, path) -> SidTable:
        with np.load(path, allow_pickle=False) as z:
            n_books = int(z["semantic_levels"])
            return cls(codes=z["codes"].astype(np.int64), sizes=z["sizes"].tolist(),
                       semantic_levels=n_books,
                       codebooks=[z[f"codebook{i}"] for i in range(n_books)],
                       method=str(z["method"]), collisions=str(z["collisions"]),
                       recon_error=float(z["recon_error"]))


def resolve_collisions(codes: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
    """Append the dedup level (``mode="dedup"``) or keep codes as they are (``"keep"``).
    Returns ``(codes, size of the appended level or 0)``."""
    if mode == "keep":
        return codes, 0
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")  # items of a group in item-index order
    rank = np.empty(len(codes), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return np.concatenate([codes, rank[:, None]], 1), int(counts.max())


def collision_stats(semantic_codes: np.ndarray) -> dict[str, float]:
    _, counts = np.unique(semantic_codes, axis=0, return_counts=True)
    n = len(semantic_codes)
    return {
        "unique_sids": int(len(counts)),
        "collision_rate": round(1 - len(counts) / n, 6),  # items beyond the first of their SID
        "items_sharing_sid": round(float(counts[counts > 1].sum()) / n, 6),
        "max_items_per_sid": int(counts.max()),
    }


class PrefixIndex:
    """Valid-next-code masks for batches of prefixes, on the model's device.

    A prefix ``(c_0, ..., c_{l-1})`` is keyed in mixed radix (``key = (c_0·K_1 + c_1)·K_2 ...``);
    level ``l`` keeps the sorted keys of the prefixes that exist and a boolean ``(n_prefixes, K_l)``
    table of the codes that may follow each, so a lookup is one ``searchsorted`` and one gather.
    """

    def __init__(self, codes: np.ndarray, sizes: list[int], device: str | torch.device = "cpu"):
        self.sizes = list(sizes)
        self.device = torch.device(device)
        c = torch.as_tensor(codes, dtype=torch.long)
        self.first_mask = torch.zeros(sizes[0], dtype=torch.bool)
        self.first_mask[c[:, 0].unique()] = True
        self.keys: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)]
        self.masks: list[torch.Tensor] = [self.first_mask[None, :]]
        for level in range(1, c.shape[1]):
            k = self.key(c[:, :level])
            uniq, inv = k.unique(return_inverse=True)
            mask = torch.zeros(len(uniq), sizes[level], dtype=torch.bool)
            mask[inv, c[:, level]] = True
            self.keys.append(uniq)
            self.masks.append(mask)
        full = self.key(c)
        order = torch.argsort(full, stable=True)  # items sharing a SID stay in item order
        self.full_keys, self.full_items = full[order], order
        self.max_group = int(torch.unique(full, return_counts=True)[1].max())
        self.to(self.device)

    def to(self, device: str | torch.device) -> PrefixIndex:
        self.device = torch.device(device)
        self.first_mask = self.first_mask.to(self.device)
        self.keys = [k.to(self.device) for k in self.keys]
        self.masks = [m.to(self.device) for m in self.masks]
        self.full_keys = self.full_keys.to(self.device)
        self.full_items = self.full_items.to(self.device)
        return self

    def key(self, prefix: torch.Tensor) -> torch.Tensor:
        key = torch.zeros(prefix.shape[0], dtype=torch.long, device=prefix.device)
        for level in range(prefix.shape[1]):
            key = key * self.sizes[level] + prefix[:, level]
        return key

    def next_mask(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix`` (B, l) -> bool (B, K_l): which codes may follow each prefix."""
        level = prefix.shape[1]
        if level == 0:
            return self.first_mask[None, :].expand(prefix.shape[0], -1)
        if level >= len(self.sizes):
            raise GlasskitError(f"prefix of length {level} is already a full SID")
        keys = self.keys[level]
        q = self.key(prefix)
        row = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
        found = keys[row] == q
        return self.masks[level][row] & found[:, None]

    def expand(self, codes: torch.Tensor) -> torch.Tensor:
        """Full SIDs (..., L) -> (..., max_group) items holding each (item order), -1 padded."""
        shape = codes.shape[:-1]
        q = self.key(codes.reshape(-1, codes.shape[-1]))
        left = torch.searchsorted(self.full_keys, q)
        right = torch.searchsorted(self.full_keys, q, right=True)
        pos = left[:, None] + torch.arange(self.max_group, device=q.device)
        ok = pos < right[:, None]
        items = torch.where(ok, self.full_items[pos.clamp_max(len(self.full_items) - 1)], -1)
        return items.reshape(*shape, self.max_group)

    def items(self, codes: torch.Tensor) -> torch.Tensor:
        """Full SIDs (B, L) -> the first item (in item order) holding each, or -1."""
        q = self.key(codes)
        row = torch.searchsorted(self.full_keys, q).clamp_max(len(self.full_keys) - 1)
        return torch.where(self.full_keys[row] == q, self.full_items[row], -1)


def prototypes(embeddings: np.ndarray, first: np.ndarray, k0: int) -> np.ndarray:
    """GLASS eq. 1: prototype of first-level code a = mean content embedding of its items.
    A code no item uses gets a zero prototype (cosine 0 with everything)."""
    sums = np.zeros((k0, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, first, embeddings)
    counts = np.bincount(first, minlength=k0)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def cosine_table(embeddings: np.ndarray, protos: np.ndarray, chunk: int = 8192,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """(n_items, K0) float32 cosine of every item with every prototype (GLASS eq. 2)."""
    p = torch.as_tensor(protos, device=device)
    p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = np.empty((len(embeddings), len(protos)), dtype=np.float32)
    for s in range(0, len(embeddings), chunk):
        e = torch.as_tensor(embeddings[s:s + chunk], device=device)
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[s:s + chunk] = (e @ p.T).clamp_(-1, 1).cpu().numpy()
    return out


def neighbour_codes(codebook: np.ndarray, k: int) -> np.ndarray:
    """(K0, k): for every first-level code, the k other codes whose code vectors are most
    cosine-similar (GLASS §4.3.1), most similar first, ties broken by code index."""
    k0 = len(codebook)
    if not 1 <= k < k0:
        raise GlasskitError(f"neighbour k must lie in [1, {k0 - 1}], got {k}")
    v = codebook / np.maximum(np.linalg.norm(codebook, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(k0), sim.shape), -sim), axis=1)
    return order[:, :k]


def usage_stats(codes: np.ndarray, sizes: list[int]) -> list[dict[str, float]]:
    """Per level: share of codes used and the perplexity exp(H) of the code distribution."""
    out = []
    for level, k in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=k)
        p = counts[counts > 0] / counts.sum()
        out.append({"level": level, "size": int(k), "used": int((counts > 0).sum()),
                    "utilization": round(float((counts > 0).mean()), 4),
                    "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2)})
    return out


def same_first_code_counts(first: np.ndarray, items: np.ndarray, starts: np.ndarray,
                           ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each sample, how many items of its long history ``items[starts:ends]`` share the
    target's first code (the length semantic hard search would retrieve, GLASS §4.3)."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(len(starts), dtype=np.int64)
    offs = np.cumsum(lengths) - lengths
    idx = np.repeat(starts - offs, lengths) + np.arange(total)
    hit = first[items[idx]] == np.repeat(first[targets], lengths)
    out = np.zeros(len(starts), dtype=np.int64)
    np.add.at(out, np.repeat(np.arange(len(starts)), lengths), hit)
    return out
