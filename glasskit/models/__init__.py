"""Model registry: every model is built from the config and the SID table's codebook sizes."""

from __future__ import annotations

from glasskit.config import Config
from glasskit.models.glass import Glass
from glasskit.models.tiger import Tiger


def build_model(cfg: Config, sizes: list[int], extras: dict | None = None):
    m = cfg.model
    common = dict(sizes=sizes, short_len=cfg.data.short_len, d=m.d_model, heads=m.heads,
                  head_dim=m.head_dim, ff=m.ff, enc_layers=m.enc_layers, dec_layers=m.dec_layers,
                  dropout=m.dropout, attn_dropout=m.attn_dropout)
    if m.name == "tiger":
        return Tiger(**common)
    if m.name == "glass":
        return Glass(**common, sid_tier=m.sid_tier, tiers=m.tiers, tier_scale=m.tier_scale,
                     tier_hidden=m.tier_hidden, hard_search=m.hard_search,
                     retrieve_max=m.retrieve_max, gate=m.gate, tau=m.tau,
                     neighbours=(extras or {}).get("neighbours"))
    raise ValueError(f"unknown model {m.name!r}")
