"""TIGER (Rajput et al., 2023): an encoder-decoder transformer over semantic IDs.

The encoder reads the short-term window as a flat sequence of SID tokens (item-major: the L
codes of the oldest item first), each token embedded as ``token + level + item position``.
The decoder starts from a learned BOS vector and predicts the target's codes level by level;
level l has its own output head over its K_l codes, projected in fp32 whatever the autocast.

Shapes: B batch, S short_len, L levels, T = S·L encoder tokens, d model width; N decoder rows
(B under teacher forcing, B·beams in beam search, sample-major).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import DecoderLayer, Dropout, EncoderLayer, KVCache, attend_mask


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


class Tiger(nn.Module):
    def __init__(self, sizes: list[int], short_len: int, d: int = 96, heads: int = 8,
                 head_dim: int = 32, ff: int = 256, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1, attn_dropout: float = 0.0):
        super().__init__()
        self.sizes, self.levels, self.short_len, self.d = list(sizes), len(sizes), short_len, d
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

    # -- decoder ---------------------------------------------------------------------------
    def decoder_input(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix (N, l) codes -> decoder input (N, l+1, d): BOS then the prefix tokens."""
        N, n = prefix.shape
        bos = self.bos.expand(N, 1, self.d)
        x = torch.cat([bos, self.emb(prefix)], 1) if n else bos
        return self.drop(x + self.dec_pos.weight[: n + 1])

    def run_decoder(self, x: torch.Tensor, state: dict, start: int = 0) -> torch.Tensor:
        """Decoder over x (N, T, d) holding positions start..start+T-1 (start > 0 only when
        decoding incrementally with the caches in ``state['cache']``)."""
        caches = state.get("cache") or [None] * len(self.decoder)
        layers = [] if self.inspect is not None else None
        for layer, kv, cache in zip(self.decoder, state["kv"], caches):
            x = layer(x, {"kv": kv, "mask": state["mask"], "cache": cache}, layers)
        if layers is not None:
            self.inspect.append({"start": start, "layers": layers})
        return self.dec_norm(x)

    def logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Level ``level``'s head on h (N, d) -> (N, K_l), projected in fp32 (never autocast)."""
        with torch.autocast(h.device.type, enabled=False):
            return self.heads[level](h.float())

    def step_logits(self, state: dict, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (N, K_l) of the next code after ``prefix`` (N, l), decoding the whole prefix."""
        h = self.run_decoder(self.decoder_input(prefix), {**state, "cache": None})
        return self.logits(h[:, -1], prefix.shape[1])

    def forward(self, batch: dict[str, torch.Tensor], loss: bool = False):
        """Teacher forcing: logits of every level, [(B, K_l)], or with ``loss`` their summed
        cross-entropy (through ``forward`` so that DistributedDataParallel sees it)."""
        state = self.encode(batch)
        target = batch["target"]  # (B, L)
        h = self.run_decoder(self.decoder_input(target[:, :-1]), self.teacher_state(state, batch))
        logits = [self.logits(h[:, i], i) for i in range(self.levels)]
        return sid_loss(logits, target) if loss else logits

    def teacher_state(self, state: dict, batch: dict[str, torch.Tensor]) -> dict:
        """Hook for models whose decoder context depends on the target's first code (GLASS)."""
        return state

    # -- incremental decoding (beam search) -------------------------------------------------
    row_keys: tuple[str, ...] = ()  # per-row state that follows each beam's parent

    def start_decoding(self, state: dict) -> dict:
        """Empty self-attention caches, one per decoder layer."""
        return {**state, "cache": [KVCache() for _ in self.decoder]}

    def decode_step(self, state: dict, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (N, K_l) of the next code after ``prefix`` (N, l), feeding only the newest
        position: the earlier ones are in the caches, which this step extends."""
        level = prefix.shape[1]
        if level == 0:
            x = self.bos.expand(len(prefix), 1, self.d)
        else:
            x = self.emb(prefix[:, -1:], first_level=level - 1)
        h = self.run_decoder(self.drop(x + self.dec_pos.weight[level]), state, start=level)
        return self.logits(h[:, -1], level)

    def select(self, state: dict, rows: torch.Tensor) -> dict:
        """Keep decoder rows ``rows`` (N', each new beam's parent row, sample-major): the
        caches and per-row state follow; per-sample state (memory, its keys/values) stays, as
        attention folds a sample's beams onto it."""
        out = {**state, "cache": [c.select(rows) for c in state["cache"]]}
        for key in self.row_keys:
            if key in state:
                out[key] = state[key][rows]
        return out

    def after_step(self, state: dict, prefix: torch.Tensor, batch: dict[str, torch.Tensor],
                   beams: int) -> dict:
        """Called after every decoding step with the kept prefixes (B·beams, l), sample-major;
        GLASS retrieves with each beam's generated first code here. TIGER's context does not
        change."""
        return state
