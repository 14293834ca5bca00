"""Stages that join data and tokenizers (above both in the import order), cached by config hash."""

from __future__ import annotations

import numpy as np

from glasskit.config import Config
from glasskit.data import Dataset, prepare, window_bounds
from glasskit.tokenize import SidTable, load_or_build, same_first_code_counts


def tokenize_dataset(ds: Dataset) -> SidTable:
    """The dataset's SID table (cached by the content of its embeddings, see load_or_build)."""
    return load_or_build(ds.embeddings(), ds.cfg.tokenizer, ds.cfg.seed)


def load(cfg: Config) -> tuple[Dataset, SidTable]:
    ds = prepare(cfg)
    return ds, tokenize_dataset(ds)


def retrieval_lengths(ds: Dataset, first: np.ndarray, split: str = "test") -> np.ndarray:
    """Per sample of ``split``: long-history items sharing the target's first code (GLASS §4.3)."""
    s = ds.splits[split]
    _, target, ls, le = window_bounds(ds.seqs, s, ds.short_len, ds.long_max)
    return same_first_code_counts(first, ds.seqs.items, ls, le, ds.seqs.items[target])


def resizing_study(ds: Dataset, first_sizes: list[int], split: str = "test") -> dict[int, np.ndarray]:
    """Retrieved lengths when the first-level codebook is resized (GLASS §4.3.2), the other
    levels kept: one tokenizer per size (cached), same data and seed."""
    out = {}
    for k0 in first_sizes:
        cfg = ds.cfg.replace(**{"tokenizer.codebooks": [k0, *ds.cfg.tokenizer.codebooks[1:]]})
        table = load_or_build(ds.embeddings(), cfg.tokenizer, cfg.seed)
        out[k0] = retrieval_lengths(ds, table.first, split)
    return out


def model_and_batcher(cfg: Config, ds: Dataset, table: SidTable, device):
    """Build ``cfg.model`` with the inputs it declares (``Model.needs``: the long history for
    retrieval, SID-Tier's item x prototype cosine table, GLASS's neighbour codes, item-id
    windows) and a batcher that produces them."""
    import torch

    from glasskit.batching import Batcher
    from glasskit.device import tune_cpu_allocator
    from glasskit.models import REGISTRY, build_model
    from glasskit.tokenize import cosine_table, neighbour_codes, prototypes

    if torch.device(device).type == "cpu":
        tune_cpu_allocator()
    from glasskit.models.interface import ChecksData

    m = cfg.model
    cls = REGISTRY[m.name].model
    if issubclass(cls, ChecksData):
        cls.check_data(cfg, ds)
    needs = cls.needs(cfg)
    inputs, tier = {}, None
    if "tier" in needs:
        emb = ds.embeddings()
        protos = prototypes(emb, table.first, table.sizes[0])
        tier = (cosine_table(emb, protos), m.tiers)
    if "neighbours" in needs:
        k = min(m.neighbour_k, table.sizes[0] - 1)
        inputs["neighbours"] = torch.as_tensor(neighbour_codes(table.codebooks[0], k))
    if "first_codes" in needs:
        inputs["first_codes"] = torch.as_tensor(table.first)
    if "item_codes" in needs:
        inputs["item_codes"] = torch.as_tensor(table.codes)
    model = build_model(cfg, table.sizes, ds.seqs.n_items, inputs).to(device)
    batcher = Batcher(ds, table, device, long="long" in needs, tier=tier,
                      items=cls.window(cfg) if "items" in needs else None,
                      history=cls.history(cfg) if "history" in needs else None,
                      negatives=m.negatives if "negatives" in needs else 0)
    return model, batcher


def training_split(cfg: Config, ds: Dataset) -> str:
    """The split ``cfg.model`` trains on: the shared training targets, or the windows tiling
    every training prefix for a model that asks for them (SASRec's ``train_on: all``)."""
    from glasskit.models import REGISTRY
    from glasskit.models.interface import TrainsOnWindows

    cls = REGISTRY[cfg.model.name].model
    window = cls.training_windows(cfg) if issubclass(cls, TrainsOnWindows) else None
    return ds.window_split(window) if window else "train"
