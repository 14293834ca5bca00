"""TIGER (Rajput et al., 2023): an encoder-decoder transformer over semantic IDs.

The encoder reads the short-term window as a flat sequence of SID tokens (item-major: the L
codes of the oldest item first), each token embedded as ``token + level + item position``.
The decoder (glasskit.models.sid_decoder, shared by every SID model) starts from a learned BOS
vector and predicts the target's codes level by level, cross-attending to the encoder's memory;
level l has its own output head over its K_l codes, projected in fp32 whatever the autocast.

Shapes: B batch, S short_len, L levels, T = S·L encoder tokens, d model width; N decoder rows
(B under teacher forcing, B·beams in beam search, sample-major).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import DecoderLayer, Dropout, EncoderLayer, SidEmbedding, attend_mask
from glasskit.models.sid_decoder import SidDecoder


@dataclass
class TigerConfig:
    """TIGER's own sizes (the shared width, heads and dropout are in ModelConfig)."""

    enc_layers: int = 2
    dec_layers: int = 2

    def validate(self) -> None:
        for name in ("enc_layers", "dec_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")


# TIGER (Rajput et al., 2023, §4): RQ-VAE with 3 codebooks of 256 (plus the collision level),
# encoder and decoder of 4 layers, 6 heads of 64, MLP 1024, input width 128, dropout 0.1, the
# last 20 items of the history
TIGER_PAPER: dict = {"tokenizer.method": "rqvae", "tokenizer.codebooks": [256, 256, 256],
                     "tokenizer.collisions": "dedup", "data.short_len": 20, "model.d_model": 128,
                     "model.heads": 6, "model.head_dim": 64, "model.ff": 1024,
                     "model.enc_layers": 4, "model.dec_layers": 4, "model.dropout": 0.1}


class Tiger(SidDecoder):
    def __init__(self, sizes: list[int], short_len: int, d: int = 96, heads: int = 8,
                 head_dim: int = 32, ff: int = 256, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1, attn_dropout: float = 0.0):
        super().__init__()
        self.sizes, self.levels, self.d = list(sizes), len(sizes), d
        self.emb = SidEmbedding(sizes, d)
        self.item_pos = nn.Embedding(short_len + 1, d)  # +1: room for an appended token (GLASS)
        self.dec_pos = nn.Embedding(len(sizes), d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(d, heads, head_dim, ff, dropout, attn_dropout)
                                     for _ in range(enc_layers))
        self.decoder = self.make_decoder(d, heads, head_dim, ff, dropout, attn_dropout, dec_layers)
        self.enc_norm, self.dec_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in sizes)
        self.drop = Dropout(dropout)
        # set to [] to record, per decoder pass, its attention maps (and GLASS's gates): see
        # glasskit.analysis.trace for how they are read
        self.inspect: list | None = None

    @classmethod
    def needs(cls, cfg) -> set[str]:
        """Inputs beyond the short window the batcher must provide (see pipeline)."""
        return set()

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> Tiger:
        m = cfg.model
        return cls(sizes, cfg.data.short_len, m.d_model, m.heads, m.head_dim, m.ff, m.enc_layers,
                   m.dec_layers, m.dropout, m.attn_dropout)

    def make_decoder(self, d, heads, head_dim, ff, dropout, attn_dropout, n) -> nn.ModuleList:
        return nn.ModuleList(DecoderLayer(d, heads, head_dim, ff, dropout, attn_dropout)
                             for _ in range(n))

    # -- encoder ---------------------------------------------------------------------------
    def embed_short(self, short_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """short_codes (B, S, L), -1 = padding -> tokens (B, S·L, d) and padding mask (B, S·L)."""
        B, S, L = short_codes.shape
        x = self.emb(short_codes) + self.item_pos.weight[:S, None, :]  # (B, S, L, d)
        pad = (short_codes < 0).reshape(B, S * L)
        return x.reshape(B, S * L, self.d), pad

    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        x, pad = self.embed_short(batch["short"])
        return self.encode_tokens(x, pad)

    def encode_tokens(self, x: torch.Tensor, pad: torch.Tensor) -> dict:
        """Encoder over tokens x (B, T, d) with padding (B, T). The state holds the memory, its
        mask (built once) and every decoder layer's keys/values over it (projected once, shared
        by all beams and decoding steps)."""
        mask = attend_mask(pad)
        x = self.drop(x)
        for layer in self.encoder:
            x = layer(x, mask)
        mem = self.enc_norm(x)
        return {"mem": mem, "mask": mask, "kv": [layer.cross.keys_values(mem) for layer in self.decoder]}
