"""Transformer layers shared by every model (pre-norm, explicit key/value width per head).

Shapes: B batch, T query length, S key length, d model width, h heads, k key/value width.

Dropout (GLASS Table 2: 0.1) is applied where Vaswani et al. (2017, §5.4) put it: to the sum of
embeddings and to the output of every sub-layer before it is added to the residual stream.
Attention-probability dropout is a separate knob (``attn_dropout``, off by default): on CPU a
non-zero value forces the unfused attention path, which materialises every probability matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 65536  # dropout keeps a unit when a 16-bit uniform draw clears p's threshold


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: each unit is zeroed with probability p and the rest are scaled so that
    the expectation is x. On CPU the keep decision compares 16-bit random numbers (four per
    64-bit draw) with round(p * 65536), so the rate is p to within 1/65536 and the scale is
    exactly 1 / (1 - that rate); this costs a third of ``F.dropout``'s one draw per unit."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    drop = round(p * _BITS)
    n = x.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = bits.view(torch.int16)[:n].view(x.shape) >= drop - _BITS // 2
    return x * keep.to(x.dtype) * (_BITS / (_BITS - drop))


class Dropout(nn.Module):
    """Dropout of a sub-layer's output on its way into the fp32 residual stream (under bf16
    autocast the output is cast back to fp32 first, so mask and residual add stay fp32)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x.float(), self.p, self.training)


def attend_mask(pad: torch.Tensor) -> torch.Tensor:
    """Key padding (B, S), True = padding -> the (B, 1, 1, S) mask attention takes, True = attend.
    Built once per batch and shared by every layer."""
    return ~pad[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention with ``heads`` heads of width ``head_dim`` (GLASS Table 2: 8 x 32).

    One module serves every attention in every model:
    - ``forward(x, mem)``: x attends to mem (self-attention when mem is x). When x holds
      ``r`` times as many rows as mem (beam search: r beams per sample, sample-major), the beams
      are folded into the query length, so each sample's keys and values are projected once and
      shared by its beams. ``kv`` passes keys and values projected earlier (``keys_values``).
    - ``over_vocab(x, table, log_count)``: x attends to a multiset of tokens that are rows of a
      small table (no positions, e.g. SID tokens, GLASS eq. 8). Keys and values are projected
      once per table row: the same numbers as projecting every retrieved token, at a cost
      independent of how many tokens each query retrieves.
    """

    def __init__(self, d: int, heads: int, head_dim: int, attn_dropout: float = 0.0):
        super().__init__()
        self.h, self.k = heads, head_dim
        self.q = nn.Linear(d, heads * head_dim)
        self.kv = nn.Linear(d, 2 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, d)
        self.attn_dropout = attn_dropout

    def keys_values(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mem (B, S, d) -> keys, values (B, h, S, k)."""
        B, S, _ = mem.shape
        k, v = self.kv(mem).view(B, S, 2, self.h, self.k).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None, causal: bool = False,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, T, d) attends to mem (B, S, d), N = r·B; mask (B, 1, 1, S), True = attend.
        Every row of ``mask`` must keep at least one key. Returns (N, T, d) and, with
        ``need_weights``, the attention weights (N, h, T, S)."""
        k, v = kv if kv is not None else self.keys_values(mem)
        B, S = k.shape[0], k.shape[2]
        N, T, _ = x.shape
        r = N // B
        if r * B != N or (causal and r != 1):
            raise ValueError(f"{N} query rows do not fold onto {B} key rows")
        q = self.q(x.reshape(B, r * T, -1)).view(B, r * T, self.h, self.k).transpose(1, 2)
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) * self.k ** -0.5  # (B, h, r·T, S)
            if causal:
                scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool, device=x.device)
                                            .triu(S - T + 1), float("-inf"))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            w = scores.softmax(-1)
            out = F.dropout(w, self.attn_dropout, self.training) @ v
            w = w.view(B, self.h, r, T, S).transpose(1, 2).reshape(N, self.h, T, S)
        else:
            w = None
            with torch.autocast(x.device.type, enabled=False):
                out = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal and T == S,
                    dropout_p=self.attn_dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(N, T, self.h * self.k)
        return self.out(out), w

    def over_vocab(self, x: torch.Tensor, table: torch.Tensor, log_count: torch.Tensor,
                   need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, T, d) attends to a multiset of tokens drawn from a small table (V, d) of token
        embeddings without positions (e.g. SID tokens, GLASS eq. 8). ``log_count`` (N, V) is the
        log of how often each token id occurs in row n's context (-inf: absent). Every row needs
        at least one token: a row with an empty context has nothing to attend to (leave it out,
        as GLASS does).

        Softmax attention over the tokens t_1..t_S equals a softmax over the vocabulary with
        bias log c_v: sum_j softmax(s)_j v[t_j] = sum_v softmax(s_v + log c_v) v[v]. So keys and
        values are projected once per table row, and the cost per query is O(V), however many
        tokens the context holds and however unevenly they are padded. With ``need_weights``
        the second output is the attention mass on every token id (N, h, T, V)."""
        N, T, _ = x.shape
        V, h = table.shape[0], self.h
        q = self.q(x).view(1, N * T, h, self.k).transpose(1, 2)  # all rows: one batch of queries
        kt, vt = self.kv(table).view(1, V, 2, h, self.k).permute(2, 0, 3, 1, 4)  # (1, h, V, k)
        bias = log_count[:, None, :].expand(N, T, V).reshape(1, 1, N * T, V)
        with torch.autocast(x.device.type, enabled=False):
            q, kt, vt = q.float(), kt.float(), vt.float()
            out = F.scaled_dot_product_attention(
                q, kt, vt, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0)
            mass = None
            if need_weights:
                mass = ((q @ kt.transpose(-1, -2)) * self.k ** -0.5 + bias).softmax(-1)
                mass = mass.view(h, N, T, V).transpose(0, 1)  # (N, h, T, V)
        out = self.out(out.transpose(1, 2).reshape(N, T, h * self.k))
        return out, mass


class KVCache:
    """Self-attention keys and values of the positions decoded so far, (N, h, l, k) each, for
    incremental decoding: a step feeds only its newest position."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k, v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
        self.k, self.v = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of the rows ``rows`` (beam search keeps each new beam's parent)."""
        out = KVCache()
        if self.k is not None:
            out.k, out.v = self.k[rows], self.v[rows]
        return out


class FeedForward(nn.Sequential):
    def __init__(self, d: int, ff: int):
        super().__init__(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float,
                 attn_dropout: float = 0.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, head_dim, attn_dropout)
        self.ff = FeedForward(d, ff)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d); mask (B, 1, 1, S) from :func:`attend_mask`."""
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, mask=mask)[0])
        return x + self.drop(self.ff(self.ln2(x)))


class CausalSelfBlock:
    """The decoder's causal self-attention sub-layer, shared by every decoder layer (TIGER's,
    GLASS's, GEMs'): needs ``ln_self``, ``self_attn`` and ``drop`` on the layer."""

    def self_block(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Causal self-attention over x (N, T, d); with a cache, x holds only the newest
        position and attends to the cached ones and itself."""
        h = self.ln_self(x)
        if cache is None:
            return x + self.drop(self.self_attn(h, h, causal=True)[0])
        kv = cache.append(*self.self_attn.keys_values(h))
        return x + self.drop(self.self_attn(h, kv=kv)[0])


class DecoderLayer(CausalSelfBlock, nn.Module):
    """Causal self-attention, cross-attention to the encoder (the short-term stream), FFN.
    GLASS's layer (models/glass.py) adds a second cross-attention and the gate."""

    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float,
                 attn_dropout: float = 0.0):
        super().__init__()
        self.ln_self, self.ln_cross, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, head_dim, attn_dropout)
        self.cross = Attention(d, heads, head_dim, attn_dropout)
        self.ff = FeedForward(d, ff)
        self.drop = Dropout(dropout)

    def ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.ff(self.ln_ff(x)))

    def forward(self, x: torch.Tensor, ctx: dict, inspect: list | None = None) -> torch.Tensor:
        """x (N, T, d); ctx holds this layer's keys/values over the encoder, their mask and,
        when decoding incrementally, this layer's self-attention cache. With ``inspect`` (a
        list) the layer appends its cross-attention map (N, h, T, S)."""
        x = self.self_block(x, ctx.get("cache"))
        z, w = self.cross(self.ln_cross(x), kv=ctx["kv"], mask=ctx["mask"],
                          need_weights=inspect is not None)
        if inspect is not None:
            inspect.append({"attn_short": w})
        x = x + self.drop(z)
        return self.ff_block(x)


# -- semantic-ID tokens ------------------------------------------------------------------------
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
        level_of = torch.cat([torch.zeros(1, dtype=torch.long),
                              torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))])
        self.register_buffer("level_of", level_of, persistent=False)  # level of each token id
        self.tok = nn.Embedding(1 + sum(sizes), d, padding_idx=0)
        self.level = nn.Embedding(len(sizes), d)

    def ids(self, codes: torch.Tensor, first_level: int = 0) -> torch.Tensor:
        """codes (..., L') with -1 for padding -> token ids (..., L'); column j holds level
        first_level + j."""
        levels = slice(first_level, first_level + codes.shape[-1])
        return torch.where(codes >= 0, codes + self.offsets[levels], 0)

    def forward(self, codes: torch.Tensor, first_level: int = 0) -> torch.Tensor:
        """codes (..., L') -> (..., L', d)."""
        levels = slice(first_level, first_level + codes.shape[-1])
        return self.tok(self.ids(codes, first_level)) + self.level.weight[levels]

    def table(self) -> torch.Tensor:
        """(V, d): the embedding of every token id (row 0, padding, is never attended)."""
        return self.tok.weight + self.level.weight[self.level_of]
