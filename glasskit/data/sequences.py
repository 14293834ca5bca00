"""Per-user chronological sequences, samples, windows and the leave-one-out split.

Sequences are stored CSR-style: ``items[offsets[u]:offsets[u+1]]`` is user ``u``'s history in
chronological order. A sample is ``(user, t)`` with ``t`` a position in that history; its inputs
are positions strictly before ``t``:

    long-term history     short-term window   target
    [t-S-L, t-S)          [t-S, t)            t          (S = short_len, L = long_max)

Windows are returned as absolute index ranges into ``items`` (zero copy), so a 100,000-item
history costs nothing until a model reads it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from glasskit.errors import DataError

PAD = -1


@dataclass
class Sequences:
    items: np.ndarray  # int64 (total,): re-indexed items 0..n_items-1
    timestamps: np.ndarray  # (total,)
    offsets: np.ndarray  # int64 (n_users + 1,)
    user_ids: np.ndarray  # (n_users,): original user id of each user index
    item_ids: np.ndarray  # (n_items,): original item id of each item index (sorted)
    dropped_users: int = 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user_items(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user]:self.offsets[user + 1]]


@dataclass
class Samples:
    """Samples of one split: ``user`` index and target position ``t`` inside that user's history."""

    user: np.ndarray  # int64 (n,)
    t: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.user)


def positive_filter(interactions: pd.DataFrame, min_rating: float | None = None) -> pd.DataFrame:
    """Keep positive interactions: ``label == 1`` when labelled, ``rating >= min_rating`` if set."""
    keep = np.ones(len(interactions), dtype=bool)
    if "label" in interactions.columns:
        keep &= interactions["label"].to_numpy() == 1
    if min_rating is not None and "rating" in interactions.columns:
        keep &= interactions["rating"].to_numpy() >= min_rating
    return interactions.loc[keep]


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values sorted, each value's index among them): ``np.unique(values,
    return_inverse=True)`` by a hash factorisation, linear in ``len(values)``."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.asarray(uniques, dtype=values.dtype), codes.astype(np.int64)


def build_sequences(interactions: pd.DataFrame, min_interactions: int = 3) -> Sequences:
    """Sort per user by timestamp (ties keep file order: a stable sort), drop short users,
    re-index items to ``0..n_items-1`` in sorted order of their original ids."""
    if len(interactions) == 0:
        raise DataError("no interactions left after the positive filter")
    # ids (text or numbers) become integer codes in the sorted order of the ids by hashing, which
    # sorts only the distinct ids: sorting millions of text ids grows worse than linearly
    user_ids, users = sorted_codes(interactions["user"].to_numpy())
    ts = interactions["timestamp"].to_numpy()
    # lexsort is stable: equal (user, timestamp) keys keep their row order in the file.
    order = np.lexsort((ts, users))
    ts = ts[order]
    items = interactions["item"].to_numpy()[order]
    counts = np.bincount(users, minlength=len(user_ids))
    keep_user = counts >= min_interactions
    dropped = int((~keep_user).sum())
    if dropped:
        warnings.warn(f"dropped {dropped} user(s) with fewer than {min_interactions} interactions",
                      stacklevel=2)
    if not keep_user.any():
        raise DataError(f"no user has at least {min_interactions} interactions")
    row_keep = np.repeat(keep_user, counts)
    items, ts = items[row_keep], ts[row_keep]
    counts = counts[keep_user]
    item_ids, item_index = sorted_codes(items)
    return Sequences(
        items=item_index.astype(np.int64),
        timestamps=ts,
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        user_ids=user_ids[keep_user],
        item_ids=item_ids,
        dropped_users=dropped,
    )


@dataclass
class Negatives:
    """Exposure negatives per user (CSR like Sequences): interactions the positive filter
    removed (KuaiRec: watch_ratio <= 1; rated data with ``data.min_rating``: the ratings below
    it), restricted to catalogue items and kept users, sorted by time."""

    items: np.ndarray  # int64 (total,) catalogue item indices
    timestamps: np.ndarray  # (total,)
    offsets: np.ndarray  # int64 (n_users + 1,)

    def between(self, users: np.ndarray, after: np.ndarray, until: np.ndarray,
                k: int) -> np.ndarray:
        """(n, k) the most recent negatives of each user with ``after < timestamp <= until``
        (exposed between the previous positive and the target), -1 padded."""
        out = np.full((len(users), k), PAD, dtype=np.int64)
        for row, (u, a, b) in enumerate(zip(users, after, until)):
            lo, hi = self.offsets[u], self.offsets[u + 1]
            ts = self.timestamps[lo:hi]
            i, j = np.searchsorted(ts, a, side="right"), np.searchsorted(ts, b, side="right")
            picked = self.items[lo:hi][max(i, j - k):j]
            out[row, : len(picked)] = picked[::-1]
        return out


def exposure_negatives(interactions: pd.DataFrame, positives: pd.DataFrame,
                       seqs: Sequences) -> Negatives:
    """The rows of ``interactions`` that are not in ``positives`` (same index), as Negatives."""
    neg = interactions.drop(index=positives.index)
    # hash lookups (-1: a user or item without positives), linear in the negatives
    u = pd.Index(seqs.user_ids).get_indexer(neg["user"].to_numpy())
    i = pd.Index(seqs.item_ids).get_indexer(neg["item"].to_numpy())
    ok = (u >= 0) & (i >= 0)
    u, i, ts = u[ok], i[ok], neg["timestamp"].to_numpy()[ok]
    order = np.lexsort((ts, u))
    counts = np.bincount(u, minlength=seqs.n_users)
    return Negatives(i[order].astype(np.int64), ts[order],
                     np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def split_samples(seqs: Sequences, train_targets_per_user: int | None = None) -> dict[str, Samples]:
    """Leave-one-out: last position = test, second to last = valid, earlier positions (t >= 1,
    all or the last ``train_targets_per_user``) = train."""
    n = seqs.lengths
    users = np.arange(seqs.n_users)
    first = np.ones_like(n) if train_targets_per_user is None else np.maximum(
        1, n - 2 - train_targets_per_user)
    n_train = n - 2 - first
    train_user = np.repeat(users, n_train)
    train_t = np.repeat(first, n_train) + _ranges(n_train)
    return {
        "train": Samples(train_user, train_t),
        "valid": Samples(users.copy(), n - 2),
        "test": Samples(users.copy(), n - 1),
    }


def window_samples(seqs: Sequences, window: int) -> Samples:
    """Windows tiling every user's training prefix (positions 1 .. n-3): samples ending at the
    last training target and every ``window`` positions earlier, so that predicting each
    window's next items covers every training position exactly once (SASRec's training)."""
    last = seqs.lengths - 3  # the last training target per user (valid: n-2, test: n-1)
    count = np.where(last >= 1, (last - 1) // window + 1, 0)  # windows whose end t_k >= 1
    users = np.repeat(np.arange(seqs.n_users), count)
    t = np.repeat(last, count) - window * _ranges(count)
    return Samples(users, t)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for every c in counts."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def window_bounds(seqs: Sequences, samples: Samples, short_len: int, long_max: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Absolute ``[start, end)`` index ranges into ``seqs.items`` of the short-term window and
    the long-term history of every sample: ``(short_start, short_end, long_start, long_end)``."""
    base = seqs.offsets[samples.user]
    target = base + samples.t
    short_start = np.maximum(base, target - short_len)
    long_start = np.maximum(base, short_start - long_max)
    return short_start, target, long_start, short_start


def short_windows(seqs: Sequences, samples: Samples, short_len: int) -> np.ndarray:
    """``(n, short_len)`` item indices, left-padded with PAD, most recent item last."""
    start, end, _, _ = window_bounds(seqs, samples, short_len, 0)
    idx = end[:, None] - short_len + np.arange(short_len)[None, :]
    valid = idx >= start[:, None]
    return np.where(valid, seqs.items[np.where(valid, idx, 0)], PAD)


def long_histories(seqs: Sequences, samples: Samples, short_len: int, long_max: int
                   ) -> list[np.ndarray]:
    """The long-term history of every sample (a view per sample, oldest first)."""
    _, _, ls, le = window_bounds(seqs, samples, short_len, long_max)
    return [seqs.items[a:b] for a, b in zip(ls, le)]


def check_no_leakage(seqs: Sequences, splits: dict[str, Samples], short_len: int,
                     long_max: int) -> int:
    """Assert that every input position of every sample lies strictly before its target and
    inside its own user's history. Returns the number of samples checked."""
    checked = 0
    for name, s in splits.items():
        ss, target, ls, le = window_bounds(seqs, s, short_len, long_max)
        base = seqs.offsets[s.user]
        if np.any(s.t < 1) or np.any(s.t >= seqs.lengths[s.user]):
            raise AssertionError(f"{name}: a target position lies outside its user's history")
        if np.any(ls < base) or np.any(le != ss) or np.any(ss > target) or np.any(ls > le):
            raise AssertionError(f"{name}: a window leaves its user's history or overlaps")
        if np.any(target - ss > short_len) or np.any(le - ls > long_max):
            raise AssertionError(f"{name}: a window is longer than configured")
        checked += len(s)
    return checked


def sequence_stats(seqs: Sequences, splits: dict[str, Samples], short_len: int,
                   long_max: int) -> dict:
    lengths = seqs.lengths
    test = splits["test"]
    _, _, ls, le = window_bounds(seqs, test, short_len, long_max)
    long_len = le - ls
    return {
        "users": int(seqs.n_users),
        "items": int(seqs.n_items),
        "interactions": int(len(seqs.items)),
        "dropped_users": int(seqs.dropped_users),
        "length_mean": round(float(lengths.mean()), 2),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        "length_min": int(lengths.min()),
        "short_len": short_len,
        "long_max": long_max,
        "long_len_mean": round(float(long_len.mean()), 2),
        "long_len_median": float(np.median(long_len)),
        "long_len_max": int(long_len.max()),
        "users_with_long_history": int((long_len > 0).sum()),
        "samples": {k: len(v) for k, v in splits.items()},
        "density": round(float(len(seqs.items)) / (seqs.n_users * seqs.n_items), 6),
    }
