"""Tensors for the models: samples (from data) joined with semantic IDs (from tokenize).

A batch is a dict of tensors:
    short   (B, S, L)  SID codes of the short-term window, -1 = padding (most recent item last)
    target  (B, L)     SID codes of the target item
    target_item (B,)   the target's item index
    user    (B,)       user index
and, for models that read the long-term history (``long=True``):
    long_codes (B, H, L)  SID codes of the long-term history sorted by (first code, recency:
                          most recent first), -1 padded; H = the longest history in the batch
    long_offsets (B, K0+1)  where each first code's run starts in long_codes
so that retrieving "the long-history items sharing first code a" is the slice
``long_codes[b, long_offsets[b, a]:long_offsets[b, a+1]]`` (GLASS §4.2, DualGR eq. 8).
For decoder-only models that read the whole kept history (``history=U``, DualGR):
    hist (B, U, L)     SID codes of the last U inputs, -1 = padding (most recent last)
    negatives (B, M)   exposure negatives between the previous positive and the target
                       (``negatives=M``; -1 = none), training targets with a negative label
For ID models (``items=S``), a batch also holds item indices:
    seq (B, S)          the last S inputs, -1 = padding (most recent last)
    seq_targets (B, S)  the item that follows each input (the last is the target), -1 = none
With ``detail=True`` (analysis only) a batch also names the items behind the codes:
    short_items (B, S)  item indices of the short window, -1 = padding
    long_items, long_age (B, H)  the sorted long history's items and their age: how many
                                 positions before the target (the most recent input has age 1)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from glasskit.data import PAD, Dataset, Samples, short_windows, window_bounds
from glasskit.tokenize import SidTable
from glasskit.tokenize.sid_tier import sid_tier_counts


class Batcher:
    def __init__(self, ds: Dataset, table: SidTable, device: torch.device | str = "cpu",
                 long: bool = False, tier: tuple[np.ndarray, int] | None = None,
                 items: int | None = None, history: int | None = None, negatives: int = 0):
        """``tier = (item × prototype cosine table, N)`` adds SID-Tier counts ``tier`` (B, K0, N);
        ``items = S`` adds the item windows of ID models."""
        if table.n_items != ds.seqs.n_items:
            raise ValueError(f"SID table has {table.n_items} items, the dataset {ds.seqs.n_items}")
        self.ds, self.table, self.device, self.long = ds, table, torch.device(device), long
        self.tier, self.items, self.history, self.negatives = tier, items, history, negatives
        self.detail = False
        self.codes = np.concatenate([table.codes, np.full((1, table.levels), -1)])  # row -1 = pad
        self.first = table.first

    def samples(self, split: str, idx: np.ndarray | None = None) -> Samples:
        s = self.ds.splits[split]
        return s if idx is None else Samples(s.user[idx], s.t[idx])

    def batch(self, split: str, idx: np.ndarray) -> dict[str, torch.Tensor]:
        s = self.samples(split, idx)
        seqs = self.ds.seqs
        window = short_windows(seqs, s, self.ds.short_len)  # (B, S), PAD = -1
        target_item = seqs.items[seqs.offsets[s.user] + s.t]
        out = {
            "short": self.codes[window],  # PAD indexes the padding row
            "target": self.table.codes[target_item],
            "target_item": target_item,
            "user": s.user,
        }
        if self.detail:
            out["short_items"] = window
        if self.history:
            out["hist"] = self.codes[short_windows(seqs, s, self.history)]
        if self.negatives and self.ds.negatives is not None:
            pos = seqs.offsets[s.user] + s.t
            out["negatives"] = self.ds.negatives.between(
                s.user, seqs.timestamps[pos - 1], seqs.timestamps[pos], self.negatives)
        if self.items:
            seq = short_windows(seqs, s, self.items)
            nxt = short_windows(seqs, Samples(s.user, s.t + 1), self.items)  # positions + 1
            out["seq"], out["seq_targets"] = seq, np.where(seq >= 0, nxt, PAD)
        if self.long:
            out.update(self._long(s))
        if self.tier is not None:
            _, _, ls, le = window_bounds(seqs, s, self.ds.short_len, self.ds.long_max)
            out["tier"] = sid_tier_counts(self.tier[0], seqs.items, ls, le, self.tier[1])
        return {k: self._to(torch.as_tensor(np.ascontiguousarray(v))) for k, v in out.items()}

    def _long(self, s: Samples) -> dict[str, np.ndarray]:
        seqs, k0 = self.ds.seqs, self.table.sizes[0]
        _, _, ls, le = window_bounds(seqs, s, self.ds.short_len, self.ds.long_max)
        lengths = le - ls
        H = max(1, int(lengths.max()))
        B = len(ls)
        pos = ls[:, None] + np.arange(H)[None, :]
        valid = pos < le[:, None]
        items = np.where(valid, seqs.items[np.where(valid, pos, 0)], PAD)
        first = np.where(valid, self.first[np.where(valid, items, 0)], k0)  # pad sorts last
        recency = -np.where(valid, pos, 0)  # most recent first within a code
        order = np.lexsort((recency, first), axis=1)
        items = np.take_along_axis(items, order, 1)
        first_sorted = np.take_along_axis(first, order, 1)
        counts = np.zeros((B, k0 + 1), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(B), H), first_sorted.ravel()), 1)
        offsets = np.concatenate([np.zeros((B, 1), np.int64), np.cumsum(counts[:, :k0], 1)], 1)
        out = {"long_codes": self.codes[items], "long_offsets": offsets}
        if self.detail:
            target = seqs.offsets[s.user] + s.t
            pos = np.take_along_axis(np.where(valid, pos, 0), order, 1)
            out["long_items"] = items
            out["long_age"] = np.where(items >= 0, target[:, None] - pos, -1)
        return out

    def seen(self, split: str, idx: np.ndarray) -> torch.Tensor:
        """(B, n_items) True for items the user interacted with before the target."""
        s = self.samples(split, idx)
        seqs = self.ds.seqs
        starts = seqs.offsets[s.user]
        lengths = s.t
        rows = np.repeat(np.arange(len(s)), lengths)
        pos = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(
            np.cumsum(lengths) - lengths, lengths))
        mask = torch.zeros(len(s), seqs.n_items, dtype=torch.bool)
        mask[torch.as_tensor(rows), torch.as_tensor(seqs.items[pos])] = True
        return self._to(mask)

    def iterate(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield ``(sample indices, batch)``; shuffled by ``seed`` (e.g. seed + epoch) and sharded
        as ``(rank, world)`` for distributed training."""
        n = len(self.ds.splits[split])
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        rank, world = shard
        order = order[rank::world]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.batch(split, idx)

    def _to(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
