"""Data: sources, the synthetic generator, sequences and splits, item embeddings.

``prepare(cfg)`` is the one entry point the notebooks, the CLI and the models use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glasskit.config import Config
from glasskit.data import sources, synthetic
from glasskit.data.embeddings import embed_texts, item_texts
from glasskit.data.raw import RawData
from glasskit.data.sequences import (
    PAD,
    Samples,
    Sequences,
    build_sequences,
    check_no_leakage,
    long_histories,
    positive_filter,
    sequence_stats,
    short_windows,
    split_samples,
    window_bounds,
)
from glasskit.errors import DataError

__all__ = [
    "PAD", "Dataset", "RawData", "Samples", "Sequences", "build_sequences", "check_no_leakage",
    "load_raw", "long_histories", "positive_filter", "prepare", "sequence_stats",
    "short_windows", "split_samples", "window_bounds",
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
    _embeddings: np.ndarray | None = field(default=None, repr=False)

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

    def texts(self) -> list[str]:
        return item_texts(self.raw.items, self.seqs.item_ids)

    def embeddings(self) -> np.ndarray:
        """``(n_items, d)`` content embeddings in item-index order (shipped ones if the data has
        them, else computed from item text and cached)."""
        if self._embeddings is None:
            if self.raw.embeddings is not None:
                self._embeddings = _align(self.raw.embeddings, self.seqs.item_ids, self.raw.name)
            else:
                self._embeddings = embed_texts(self.texts(), self.cfg.embed, self.cfg.seed)
        return self._embeddings


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
    inter = positive_filter(raw.interactions, cfg.data.min_rating)
    seqs = build_sequences(inter, cfg.data.min_user_interactions)
    splits = split_samples(seqs, cfg.data.train_targets_per_user)
    return Dataset(cfg, raw, seqs, splits)
