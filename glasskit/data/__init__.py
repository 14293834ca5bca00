"""Data: sources, the synthetic generator, sequences and splits, item embeddings.

``prepare(cfg)`` is the one entry point the notebooks, the CLI and the models use.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from glasskit.config import Config
from glasskit.data import sources, synthetic
from glasskit.data.embeddings import (
    ACCEPTED,
    embed_texts,
    has_text,
    interaction_embeddings,
    item_texts,
)
from glasskit.data.raw import RawData
from glasskit.data.sequences import (
    PAD,
    Negatives,
    Samples,
    Sequences,
    build_sequences,
    check_no_leakage,
    exposure_negatives,
    long_histories,
    positive_filter,
    sequence_stats,
    short_windows,
    split_samples,
    window_bounds,
    window_samples,
)
from glasskit.errors import DataError
from glasskit.io import fingerprint

__all__ = [
    "PAD", "Dataset", "Negatives", "RawData", "Samples", "Sequences", "build_sequences", "check_no_leakage",
    "load_raw", "long_histories", "positive_filter", "prepare", "sequence_stats",
    "short_windows", "split_samples", "window_bounds", "window_samples",
]


def load_raw(cfg: Config) -> RawData:
    d = cfg.data
    name = d.dataset
    if name == "ml-100k":
        return sources.load_ml100k(d.data_dir, d.duplicates)
    if name == "ml-latest-small":
        return sources.load_ml_latest_small(d.data_dir, d.duplicates)
    if name == "ml-1m":
        return sources.load_ml1m(d.data_dir, d.duplicates)
    if name == "kuairec":
        return sources.load_kuairec(d.data_dir, d.kuairec_matrix, d.duplicates)
    if name == "csv":
        return sources.load_csv(d.data_dir, d.duplicates)
    if name == "s3rec":
        return sources.load_s3rec(d.data_dir, d.name)
    if name == "synthetic":
        return synthetic.generate(cfg.synthetic, cfg.seed)
    raise DataError(f"unknown dataset {name!r}")


@dataclass
class Dataset:
    """A prepared dataset: sequences, leave-one-out splits and (lazily) item embeddings."""

    cfg: Config
    raw: RawData
    seqs: Sequences
    splits: dict[str, Samples]
    negatives: Negatives | None = None  # exposure negatives, when the data has any
    _embeddings: np.ndarray | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def short_len(self) -> int:
        return self.cfg.data.short_len

    @property
    def long_max(self) -> int:
        return self.cfg.data.long_max

    def stats(self) -> dict:
        out = {"dataset": self.raw.name}
        out.update(sequence_stats(self.seqs, self.splits, self.short_len, self.long_max))
        return out

    @property
    def fingerprint(self) -> str:
        """Digest of what this dataset was built from, by content: the cleaned interactions,
        the item table and any shipped embeddings. Caches and runs are keyed on it, so data
        edited in place never meets a result built from its old contents."""
        if self._fingerprint is None:
            shipped = self.raw.embeddings or (np.zeros(0), np.zeros(0))
            self._fingerprint = fingerprint(self.raw.name, self.raw.interactions, self.raw.items,
                                            *shipped)
        return self._fingerprint

    def window_split(self, window: int) -> str:
        """The name of the split of windows tiling every training prefix (``window`` items
        each, see :func:`window_samples`), built on first use."""
        name = f"windows_{window}"
        if name not in self.splits:
            self.splits[name] = window_samples(self.seqs, window)
        return name

    def targets_per_epoch(self, split: str) -> int:
        """Target positions one pass over training ``split`` predicts: one per sample of
        ``train``; every training position for a split of windows (they tile them once)."""
        if split.startswith("windows_"):
            return len(split_samples(self.seqs, None)["train"])
        return len(self.splits[split])

    def texts(self) -> list[str]:
        return item_texts(self.raw.items, self.seqs.item_ids)

    def embeddings(self) -> np.ndarray:
        """``(n_items, d)`` item embeddings in item-index order: shipped ones if the data has
        them, else from item text (``embed.method``), else (data without text, or
        ``embed.method: interactions``) a factorisation of the training interactions. Cached
        by content."""
        if self._embeddings is None:
            method = self.cfg.embed.method
            if self.raw.embeddings is not None and method != "interactions":
                self._embeddings = _align(self.raw.embeddings, self.seqs.item_ids, self.raw.name)
            elif method == "interactions" or (method == "auto" and not has_text(self.raw.items)):
                if method == "auto":
                    warnings.warn(f"{self.raw.name}: no item text or shipped embeddings; using "
                                  "content-free embeddings from the training interactions "
                                  "(embed.method: interactions)", stacklevel=2)
                users, items = self.training_interactions()
                self._embeddings = interaction_embeddings(users, items, self.seqs.n_items,
                                                          self.cfg.embed.dim, self.cfg.seed)
            elif not has_text(self.raw.items):
                raise DataError(f"{self.raw.name}: embed.method {method!r} needs item text, and "
                                f"the data has none; accepted item inputs: {ACCEPTED}")
            else:
                cfg = self.cfg.embed
                if method == "auto" and self.raw.content == "tokens":
                    # ids as tokens are not language: TF-IDF weighs each by its rarity (a brand
                    # or fine category says more about an item than the top category most
                    # items share), and the SVD keeps embed.dim of the directions
                    cfg = dataclasses.replace(cfg, method="tfidf")
                self._embeddings = embed_texts(self.texts(), cfg, self.cfg.seed)
        return self._embeddings

    def training_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """(user index, item index) of every interaction of the training split: all but each
        user's last two (the validation and test targets)."""
        seqs = self.seqs
        keep = np.repeat(seqs.lengths - 2, seqs.lengths)
        pos = np.arange(len(seqs.items)) - np.repeat(seqs.offsets[:-1], seqs.lengths)
        users = np.repeat(np.arange(seqs.n_users), seqs.lengths)
        return users[pos < keep], seqs.items[pos < keep]


def _align(shipped: tuple[np.ndarray, np.ndarray], item_ids: np.ndarray, name: str) -> np.ndarray:
    ids, matrix = shipped
    order = {k: i for i, k in enumerate(ids.tolist())}
    missing = [i for i in item_ids.tolist() if i not in order]
    if missing:
        raise DataError(f"{name}: item embeddings lack {len(missing)} catalogue item(s), "
                        f"e.g. {missing[:5]}")
    out = matrix[[order[i] for i in item_ids.tolist()]]
    if not np.isfinite(out).all():
        raise DataError(f"{name}: item embeddings contain NaN or infinite values")
    return out


def prepare(cfg: Config) -> Dataset:
    cfg.validate()
    raw = load_raw(cfg)
    if cfg.data.min_rating is not None and "rating" not in raw.interactions.columns:
        raise DataError(f"{raw.name}: data.min_rating={cfg.data.min_rating} filters by rating, but "
                        "these interactions have no rating column; drop data.min_rating (every "
                        "interaction is then a positive) or give the ratings")
    inter = positive_filter(raw.interactions, cfg.data.min_rating)
    seqs = build_sequences(inter, cfg.data.min_user_interactions)
    splits = split_samples(seqs, cfg.data.train_targets_per_user)
    negatives = exposure_negatives(raw.interactions, inter, seqs) if len(inter) < len(
        raw.interactions) else None
    return Dataset(cfg, raw, seqs, splits, negatives)
