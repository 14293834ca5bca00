"""TIGER (Rajput et al., 2023): an encoder-decoder transformer over semantic IDs.

The encoder reads the short-term window as a flat sequence of SID tokens (item-major: the L
codes of the oldest item first), each token embedded as ``token + level + item position``.
The decoder starts from a learned BOS vector and predicts the target's codes level by level;
level l has its own output head over its K_l codes.

Shapes: B batch, S short_len, L levels, T = S·L encoder tokens, d model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glasskit.models.layers import DecoderLayer, EncoderLayer


def sid_loss(logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy summed over the SID levels (target (B, L))."""
    return torch.stack([F.cross_entropy(lg.float(), target[:, i])
                        for i, lg in enumerate(logits)]).sum()


class SidEmbedding(nn.Module):
    """Level-aware token embedding: code c at level l is token ``1 + offset_l + c`` (0 = pad)."""

    def __init__(self, sizes: list[int], d: int):
        super().__init__()
        offsets = torch.tensor([0, *list(torch.tensor(sizes).cumsum(0)[:-1].tolist())]) + 1
        self.register_buffer("offsets", offsets, persistent=False)
        self.tok = nn.Embedding(1 + sum(sizes), d, padding_idx=0)
        self.level = nn.Embedding(len(sizes), d)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., L') with -1 for padding -> (..., L', d); level l is column l."""
        levels = codes.shape[-1]
        ids = torch.where(codes >= 0, codes + self.offsets[:levels], 0)
        return self.tok(ids) + self.level.weight[:levels]


class Tiger(nn.Module):
    def __init__(self, sizes: list[int], short_len: int, d: int = 96, heads: int = 8,
                 head_dim: int = 32, ff: int = 256, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.sizes, self.levels, self.short_len, self.d = list(sizes), len(sizes), short_len, d
        self.emb = SidEmbedding(sizes, d)
        self.item_pos = nn.Embedding(short_len + 1, d)  # +1: room for an appended token (GLASS)
        self.dec_pos = nn.Embedding(len(sizes), d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(d, heads, head_dim, ff, dropout)
                                     for _ in range(enc_layers))
        self.decoder = self.make_decoder(d, heads, head_dim, ff, dropout, dec_layers)
        self.enc_norm, self.dec_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in sizes)
        self.drop = nn.Dropout(dropout)

    def make_decoder(self, d, heads, head_dim, ff, dropout, n) -> nn.ModuleList:
        return nn.ModuleList(DecoderLayer(d, heads, head_dim, ff, dropout) for _ in range(n))

    # -- encoder ---------------------------------------------------------------------------
    def embed_short(self, short_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """short_codes (B, S, L), -1 = padding -> tokens (B, S·L, d) and padding mask (B, S·L)."""
        B, S, L = short_codes.shape
        x = self.emb(short_codes) + self.item_pos.weight[:S, None, :]  # (B, S, L, d)
        pad = (short_codes < 0).reshape(B, S * L)
        return x.reshape(B, S * L, self.d), pad

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, pad = self.embed_short(batch["short"])
        x = self.drop(x)
        for layer in self.encoder:
            x = layer(x, pad)
        return {"mem": self.enc_norm(x), "mem_pad": pad}

    # -- decoder ---------------------------------------------------------------------------
    def decoder_input(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix (B, l) codes -> decoder input (B, l+1, d): BOS then the prefix tokens."""
        B, n = prefix.shape
        bos = self.bos.expand(B, 1, self.d)
        x = torch.cat([bos, self.emb(prefix)], 1) if n else bos
        return self.drop(x + self.dec_pos.weight[: n + 1])

    def run_decoder(self, x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        for layer in self.decoder:
            x = layer(x, state["mem"], state["mem_pad"])
        return self.dec_norm(x)

    def step_logits(self, state: dict[str, torch.Tensor], prefix: torch.Tensor) -> torch.Tensor:
        """Logits (B, K_l) of the next code after ``prefix`` (B, l)."""
        h = self.run_decoder(self.decoder_input(prefix), state)
        return self.heads[prefix.shape[1]](h[:, -1])

    def forward(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Teacher forcing: logits of every level, [(B, K_l)]."""
        state = self.encode(batch)
        target = batch["target"]  # (B, L)
        h = self.run_decoder(self.decoder_input(target[:, :-1]), self.teacher_state(state, batch))
        return [head(h[:, i]) for i, head in enumerate(self.heads)]

    def teacher_state(self, state: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        """Hook for models whose decoder context depends on the target's first code (GLASS)."""
        return state

    # -- beam search hooks -----------------------------------------------------------------
    def expand_state(self, state: dict[str, torch.Tensor], beams: int) -> dict[str, torch.Tensor]:
        """Repeat every per-sample tensor ``beams`` times (sample-major)."""
        return {k: v.repeat_interleave(beams, 0) if torch.is_tensor(v) else v
                for k, v in state.items()}

    def after_step(self, state: dict[str, torch.Tensor], prefix: torch.Tensor,
                   batch: dict[str, torch.Tensor], beams: int) -> dict[str, torch.Tensor]:
        """Called after every decoding step with the kept prefixes (B·beams, l); GLASS
        recomputes its per-beam retrieval here. TIGER's context does not change."""
        return state
