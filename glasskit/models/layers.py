"""Transformer layers shared by every model (pre-norm, explicit key/value width per head).

Shapes: B batch, T query length, S key length, d model width, h heads, k key/value width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with ``heads`` heads of width ``head_dim`` (GLASS Table 2: 8 × 32)."""

    def __init__(self, d: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.h, self.k = heads, head_dim
        self.q = nn.Linear(d, heads * head_dim)
        self.kv = nn.Linear(d, 2 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mem: torch.Tensor, key_pad: torch.Tensor | None = None,
                causal: bool = False, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d) attends to mem (B, S, d); key_pad (B, S) True where a key is padding.
        A row whose keys are all padding attends to nothing and returns zeros (never NaN)."""
        B, T, _ = x.shape
        S = mem.shape[1]
        q = self.q(x).view(B, T, self.h, self.k).transpose(1, 2)  # (B, h, T, k)
        k, v = self.kv(mem).view(B, S, 2, self.h, self.k).permute(2, 0, 3, 1, 4)  # (B, h, S, k)
        mask = None
        if key_pad is not None:
            mask = ~key_pad[:, None, None, :]  # (B, 1, 1, S) True = attend
        if causal:
            tri = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            mask = tri if mask is None else mask & tri
        empty = None
        if key_pad is not None:
            empty = key_pad.all(1)  # (B,)
            if empty.any():  # give empty rows one harmless key so softmax stays finite
                mask = mask.clone()
                mask[empty, ..., 0] = True
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) / self.k ** 0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            w = scores.softmax(-1)
            out = F.dropout(w, p, self.training) @ v
        else:
            w = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out(out.transpose(1, 2).reshape(B, T, self.h * self.k))
        if empty is not None and empty.any():
            out = out.masked_fill(empty[:, None, None], 0.0)
            if w is not None:
                w = w.masked_fill(empty[:, None, None, None], 0.0)
        return out, w


class FeedForward(nn.Sequential):
    def __init__(self, d: int, ff: int, dropout: float):
        super().__init__(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, head_dim, dropout)
        self.ff = FeedForward(d, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, key_pad=pad)[0])
        return x + self.drop(self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder (the short-term stream), FFN.
    GLASS's layer (models/glass.py) adds a second cross-attention and the gate."""

    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float):
        super().__init__()
        self.ln_self, self.ln_cross, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, head_dim, dropout)
        self.cross = Attention(d, heads, head_dim, dropout)
        self.ff = FeedForward(d, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def self_block(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_self(x)
        return x + self.drop(self.self_attn(h, h, causal=True)[0])

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        x = self.self_block(x)
        x = x + self.drop(self.cross(self.ln_cross(x), mem, key_pad=mem_pad)[0])
        return x + self.drop(self.ff(self.ln_ff(x)))
