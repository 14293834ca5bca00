"""Model registry: every model is built from the config and the SID table's codebook sizes."""

from __future__ import annotations

from glasskit.config import Config
from glasskit.models.tiger import Tiger


def build_model(cfg: Config, sizes: list[int], extras: dict | None = None):
    m = cfg.model
    common = dict(sizes=sizes, short_len=cfg.data.short_len, d=m.d_model, heads=m.heads,
                  head_dim=m.head_dim, ff=m.ff, enc_layers=m.enc_layers, dec_layers=m.dec_layers,
                  dropout=m.dropout)
    if m.name == "tiger":
        return Tiger(**common)
    raise ValueError(f"unknown model {m.name!r}")
