"""Semantic IDs: RQ-VAE and RQ-KMeans tokenizers, the SID table and GLASS's code structures.

Works on an embedding matrix only (nothing from ``glasskit.data``)."""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from glasskit.config import TokenizerConfig
from glasskit.device import resolve_device
from glasskit.errors import DataError
from glasskit.io import cache_dir, fingerprint
from glasskit.tokenize.rqkmeans import rq_kmeans
from glasskit.tokenize.rqvae import train_rqvae
from glasskit.tokenize.semantic_ids import (
    PrefixIndex,
    SidTable,
    collision_stats,
    cosine_table,
    neighbour_codes,
    prototypes,
    resolve_collisions,
    same_first_code_counts,
    usage_stats,
)

__all__ = [
    "PrefixIndex", "SidTable", "build_sid_table", "check_embeddings", "collision_stats",
    "cosine_table", "load_or_build", "neighbour_codes", "prototypes", "same_first_code_counts",
    "sid_stats", "usage_stats",
]


def check_embeddings(embeddings: np.ndarray, cfg: TokenizerConfig,
                     n_items: int | None = None) -> np.ndarray:
    e = np.asarray(embeddings)
    if e.ndim != 2 or e.shape[1] == 0:
        raise DataError(f"item embeddings must be a 2-D (items, dim) matrix, got shape {e.shape}")
    if n_items is not None and len(e) != n_items:
        raise DataError(f"item embeddings have {len(e)} rows but the catalogue has {n_items} items")
    bad = ~np.isfinite(e).all(1)
    if bad.any():
        raise DataError(f"item embeddings contain NaN or infinite values (first in row "
                        f"{int(np.flatnonzero(bad)[0])}, {int(bad.sum())} rows in all)")
    if len(e) > 1 and (e == e[0]).all():
        raise DataError(f"item embeddings are the same vector for all {len(e)} items (e.g. all "
                        "zeros), so every item would get one semantic ID prefix: give embeddings "
                        "that tell items apart, or drop them to embed item text or interactions")
    for level, k in enumerate(cfg.codebooks):
        if len(e) < k:
            raise DataError(f"{len(e)} items are fewer than the {k} codes of level {level}")
    return e.astype(np.float32)


def build_sid_table(embeddings: np.ndarray, cfg: TokenizerConfig, seed: int = 0,
                    n_items: int | None = None) -> tuple[SidTable, dict]:
    """Tokenize the items. Returns the table and a training log (empty for rqkmeans)."""
    cfg.validate()
    e = check_embeddings(embeddings, cfg, n_items)
    device = resolve_device(cfg.device)
    x = torch.as_tensor(e, device=device)
    log: dict = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.method == "rqkmeans":
            codes_t, books, recon = rq_kmeans(x, list(cfg.codebooks), seed=seed,
                                              iters=cfg.kmeans_iters, balanced=cfg.balanced)
        else:
            model, log = train_rqvae(x, list(cfg.codebooks), cfg.hidden, cfg.latent, cfg.epochs,
                                     cfg.lr, cfg.batch_size, cfg.beta, seed)
            model.eval()
            with torch.no_grad():
                recon, codes_t, _, _ = model(x)
            books = [b.detach() for b in model.codebooks]
    semantic = codes_t.cpu().numpy().astype(np.int64)
    codes, extra = resolve_collisions(semantic, cfg.collisions)
    sizes = list(cfg.codebooks) + ([max(extra, 2)] if extra else [])
    table = SidTable(codes=codes, sizes=sizes, semantic_levels=len(cfg.codebooks),
                     codebooks=[b.cpu().numpy().astype(np.float32) for b in books],
                     method=cfg.method, collisions=cfg.collisions,
                     recon_error=float((recon - x).pow(2).sum(1).mean()))
    return table, log


def load_or_build(embeddings: np.ndarray, cfg: TokenizerConfig, seed: int,
                  cache: Path | None = None) -> SidTable:
    """The SID table of these embeddings, cached under a key derived from everything it
    depends on: the embedding matrix's content, the tokenizer config and the seed. A damaged
    cache entry is rebuilt with a warning."""
    key = fingerprint(np.asarray(embeddings), dataclasses.asdict(cfg), seed)
    path = (cache or cache_dir() / "tokenizers") / f"{cfg.method}-{key}.npz"
    if path.is_file():
        try:
            return SidTable.load(path)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"{path}: damaged cache entry ({e}); rebuilding it", stacklevel=2)
    table, _ = build_sid_table(embeddings, cfg, seed, n_items=len(embeddings))
    table.save(path)
    return table


def sid_stats(table: SidTable, embeddings: np.ndarray | None = None) -> dict:
    buckets = np.bincount(table.first, minlength=table.sizes[0])
    used = buckets[buckets > 0]
    out = {
        "method": table.method,
        "codebooks": table.sizes[: table.semantic_levels],
        "collisions": table.collisions,
        "levels": table.levels,
        "items": table.n_items,
        "recon_error": round(table.recon_error, 6),
        "usage": usage_stats(table.codes, table.sizes)[: table.semantic_levels],
        **collision_stats(table.semantic_codes()),
        "unique_full_sids": int(len(np.unique(table.codes, axis=0))),
        "first_bucket_min": int(used.min()),
        "first_bucket_median": float(np.median(used)),
        "first_bucket_max": int(used.max()),
    }
    if embeddings is not None:
        var = float(((embeddings - embeddings.mean(0)) ** 2).sum(1).mean())
        out["recon_error_relative"] = round(table.recon_error / max(var, 1e-12), 6)
    return out
