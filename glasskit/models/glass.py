"""GLASS (glass.md §4): TIGER plus SID-Tier, semantic hard search with an adaptive gate, and
sparsity-aware augmentation (semantic neighbours; codebook resizing lives in the tokenizer).

- SID-Tier (eq. 2-6): the (B, K0, N) tier counts of the long-term history (from batching),
  scaled (log1p or raw), flattened, through an MLP to one token appended after the short-term
  tokens in the encoder.
- Semantic hard search (eq. 7-13): at decoding steps after the first, the key is the first code
  of the sequence being decoded (teacher forcing: the target's; inference: each beam's own).
  The long-history items sharing it (most recent ``retrieve_max``) are embedded as SID tokens
  and read by a second cross-attention in every decoder layer; the gate
  g = σ([Z_short; Z_ret] W_g) ∈ [0,1]^d mixes Z = (1-g)·Z_short + g·Z_ret, then the FFN.
  The first step (the BOS position) and an empty retrieval use the short-term stream alone.
- Semantic neighbours (§4.3.1): when fewer than τ items share the key, the items of its top-k
  neighbour codes are merged in, in neighbour order, up to ``retrieve_max``.

Retrieval is a slice of the per-sample history sorted by first code (``long_codes`` and
``long_offsets`` from batching), gathered for all beams at once on the model's device.
"""

from __future__ import annotations

import torch
from torch import nn

from glasskit.models.layers import Attention, DecoderLayer
from glasskit.models.tiger import Tiger


class GlassDecoderLayer(DecoderLayer):
    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float, gate: str):
        super().__init__(d, heads, head_dim, ff, dropout)
        self.ret_cross = Attention(d, heads, head_dim, dropout)  # CrossAttn_φ (eq. 11)
        self.gate_proj = nn.Linear(2 * d, d, bias=False) if gate == "learned" else None  # W_g

    def forward(self, x, mem, mem_pad, ret=None, ret_pad=None, inspect: list | None = None):
        x = self.self_block(x)
        h = self.ln_cross(x)
        need = inspect is not None
        z_short, w_short = self.cross(h, mem, key_pad=mem_pad, need_weights=need)
        rec = {"attn_short": w_short} if need else None
        if ret is not None:
            z_ret, w_ret = self.ret_cross(h, ret, key_pad=ret_pad, need_weights=need)
            if self.gate_proj is None:
                g = torch.full_like(z_short, 0.5)
            else:
                g = torch.sigmoid(self.gate_proj(torch.cat([z_short, z_ret], -1)))  # eq. 12
            # the BOS position (first step) and empty retrievals use the short stream alone
            use = torch.ones_like(g[..., :1])
            use[:, 0] = 0
            use = use * (~ret_pad.all(1)).to(g.dtype)[:, None, None]
            g = g * use
            z = (1 - g) * z_short + g * z_ret  # eq. 13
            if need:
                rec.update(gate=g, attn_ret=w_ret)
        else:
            z = z_short
        if need:
            inspect.append(rec)
        x = x + self.drop(z)
        return x + self.drop(self.ff(self.ln_ff(x)))


class Glass(Tiger):
    def __init__(self, sizes: list[int], short_len: int, d: int = 96, heads: int = 8,
                 head_dim: int = 32, ff: int = 256, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1, sid_tier: bool = True, tiers: int = 10,
                 tier_scale: str = "log1p", tier_hidden: int = 20, hard_search: bool = True,
                 retrieve_max: int = 64, gate: str = "learned", neighbours: torch.Tensor | None = None,
                 tau: int = 8):
        self.hard_search, self.gate_mode = hard_search, gate
        super().__init__(sizes, short_len, d, heads, head_dim, ff, enc_layers, dec_layers, dropout)
        self.sid_tier, self.tiers, self.tier_scale = sid_tier, tiers, tier_scale
        self.retrieve_max, self.tau = retrieve_max, tau
        if sid_tier:
            self.tier_mlp = nn.Sequential(nn.Linear(sizes[0] * tiers, tier_hidden), nn.ReLU(),
                                          nn.Linear(tier_hidden, d))  # eq. 5
            self.tier_type = nn.Parameter(torch.zeros(d))
        self.register_buffer("neighbours", neighbours if neighbours is not None else None,
                             persistent=False)
        self.needs_long = hard_search
        self.needs_tier = sid_tier
        self.inspect: list | None = None  # set to [] to record gates and attention maps

    def make_decoder(self, d, heads, head_dim, ff, dropout, n) -> nn.ModuleList:
        if not self.hard_search:
            return super().make_decoder(d, heads, head_dim, ff, dropout, n)
        return nn.ModuleList(GlassDecoderLayer(d, heads, head_dim, ff, dropout, self.gate_mode)
                             for _ in range(n))

    # -- encoder: short-term tokens ‖ e_tier (eq. 6) ----------------------------------------
    def encode(self, batch):
        x, pad = self.embed_short(batch["short"])
        if self.sid_tier:
            t = batch["tier"].float()  # (B, K0, N)
            t = torch.log1p(t) if self.tier_scale == "log1p" else t
            e_tier = self.tier_mlp(t.flatten(1)) + self.tier_type + self.item_pos.weight[-1]
            x = torch.cat([x, e_tier[:, None, :]], 1)
            pad = torch.cat([pad, torch.zeros_like(pad[:, :1])], 1)
        x = self.drop(x)
        for layer in self.encoder:
            x = layer(x, pad)
        state = {"mem": self.enc_norm(x), "mem_pad": pad}
        if self.hard_search:
            state["long_codes"], state["long_offsets"] = batch["long_codes"], batch["long_offsets"]
        return state

    # -- semantic hard search ----------------------------------------------------------------
    def retrieve(self, long_codes: torch.Tensor, long_offsets: torch.Tensor, key: torch.Tensor,
                 row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of sample ``row[i]``'s long history whose first code is ``key[i]`` (plus
        neighbour codes' items when fewer than τ): codes (n, R, L) and padding (n, R)."""
        off = long_offsets[row]  # (n, K0+1)
        keys = key[:, None]
        if self.neighbours is not None:
            keys = torch.cat([keys, self.neighbours[key]], 1)  # (n, 1+k) in neighbour order
        start = off.gather(1, keys)
        count = off.gather(1, keys + 1) - start  # (n, 1+k)
        if self.neighbours is not None:
            few = count[:, :1] < self.tau
            count = torch.cat([count[:, :1], count[:, 1:] * few], 1)
        R = self.retrieve_max
        cum = count.cumsum(1)
        slot = torch.arange(R, device=key.device).expand(len(key), R)
        j = torch.searchsorted(cum, slot.contiguous(), right=True).clamp_max(keys.shape[1] - 1)
        within = slot - (cum.gather(1, j) - count.gather(1, j))
        pos = start.gather(1, j) + within
        pad = slot >= cum[:, -1:]
        pos = torch.where(pad, 0, pos)
        codes = long_codes[row[:, None], pos]  # (n, R, L)
        used = int((~pad).sum(1).max()) if len(key) else 0
        return codes[:, : max(used, 1)], pad[:, : max(used, 1)]

    def with_retrieval(self, state, key: torch.Tensor, row: torch.Tensor):
        codes, pad = self.retrieve(state["long_codes"], state["long_offsets"], key, row)
        R, L = codes.shape[1], codes.shape[2]
        ret = self.emb(codes).reshape(len(key), R * L, self.d)  # eq. 8: Lookup(H_ret)
        ret_pad = pad[:, :, None].expand(-1, -1, L).reshape(len(key), R * L)
        return {**state, "ret": ret, "ret_pad": ret_pad, "ret_len": (~pad).sum(1)}

    def teacher_state(self, state, batch):
        if not self.hard_search:
            return state
        row = torch.arange(batch["target"].shape[0], device=batch["target"].device)
        return self.with_retrieval(state, batch["target"][:, 0], row)  # ground-truth first code

    def expand_state(self, state, beams: int):
        out = {k: v.repeat_interleave(beams, 0) for k, v in state.items()
               if k not in ("long_codes", "long_offsets")}
        if self.hard_search:  # retrieval indexes the per-sample history through `row`
            out["long_codes"], out["long_offsets"] = state["long_codes"], state["long_offsets"]
            out["beams"] = beams
        return out

    def after_step(self, state, prefix, batch, beams: int):
        if not self.hard_search:
            return state
        row = torch.arange(len(prefix), device=prefix.device) // beams
        key = prefix[:, 0].clamp_min(0)  # each beam's own generated first code
        return self.with_retrieval(state, key, row)

    def run_decoder(self, x, state):
        ret, ret_pad = state.get("ret"), state.get("ret_pad")
        for layer in self.decoder:
            if self.hard_search:
                x = layer(x, state["mem"], state["mem_pad"], ret, ret_pad, self.inspect)
            else:
                x = layer(x, state["mem"], state["mem_pad"])
        if self.inspect is not None and ret is not None:
            self.inspect.append({"ret_len": state["ret_len"]})
        return self.dec_norm(x)
