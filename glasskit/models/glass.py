"""GLASS (glass.md §4): TIGER plus SID-Tier, semantic hard search with an adaptive gate, and
sparsity-aware augmentation (semantic neighbours; codebook resizing lives in the tokenizer).

- SID-Tier (eq. 2-6): the (B, K0, N) tier counts of the long-term history (from batching),
  scaled (log1p or raw), flattened, through an MLP to one token appended after the short-term
  tokens in the encoder.
- Semantic hard search (eq. 7-13): at decoding steps after the first, the key is the first code
  of the sequence being decoded (teacher forcing: the target's; inference: each beam's own).
  Every long-history item sharing it (eq. 7; ``retrieve_max`` optionally keeps only the most
  recent ones) is a run of SID tokens, E_ret = Lookup(H_ret) (eq. 8), read by a second
  cross-attention in every decoder layer (eq. 11); the gate g = σ([Z_short; Z_ret] W_g) ∈ [0,1]^d
  mixes Z = (1-g)·Z_short + g·Z_ret (eq. 12-13), then the FFN. The first step (the BOS position)
  and an empty retrieval use the short-term stream alone.
- Semantic neighbours (§4.3.1): when fewer than τ items share the key, the items of its top-k
  neighbour codes are merged in, in neighbour order.

Cost: retrieval is a slice of the per-sample history sorted by first code (``long_codes`` and
``long_offsets`` from batching), gathered for all beams at once. The retrieved tokens carry no
position, so their keys and values are projected once per vocabulary token per decoder pass
(:meth:`Attention.over_vocab`) and shared by every beam, level and sample that retrieves them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import Attention, DecoderLayer
from glasskit.models.tiger import Tiger, TigerConfig


@dataclass
class GlassConfig(TigerConfig):
    """GLASS's switches (§4); with every switch off GLASS is TIGER."""

    sid_tier: bool = True  # §4.1: K0 × N tier counts -> MLP -> one encoder token
    tiers: int = 10  # N equal-width tiers over [-1, 1]
    tier_scale: str = "log1p"  # "log1p" or "raw" counts into the MLP
    tier_hidden: int = 20  # GLASS Table 2: SIDTier MLP dimension
    hard_search: bool = True  # §4.2: retrieval cross-attention + gate after the first step
    retrieve_max: int | None = None  # None: every same-first-code item (eq. 7); else the most recent
    gate: str = "learned"  # "learned" (eq. 12) or "fixed" (g = 0.5, §5.4)
    neighbours: bool = False  # §4.3.1: merge the top-k neighbour codes' items when few
    neighbour_k: int = 4
    tau: int = 8  # neighbour augmentation triggers below tau retrieved items

    def validate(self) -> None:
        super().validate()
        if self.tier_scale not in ("log1p", "raw"):
            raise ConfigError(f"model.tier_scale must be log1p or raw, got {self.tier_scale!r}")
        if self.gate not in ("learned", "fixed"):
            raise ConfigError(f"model.gate must be learned or fixed, got {self.gate!r}")
        for name in ("tiers", "tier_hidden", "neighbour_k", "tau"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (name != "tau"):
                raise ConfigError(f"model.{name} must be a {'positive' if name != 'tau' else 'non-negative'} "
                                  f"integer, got {value!r}")
        if self.retrieve_max is not None and (not isinstance(self.retrieve_max, int)
                                              or self.retrieve_max < 1):
            raise ConfigError(f"model.retrieve_max must be a positive integer or null, "
                              f"got {self.retrieve_max!r}")


# GLASS ablation rows (§5.3-5.4); "resize" divides the first-level codebook (§4.3.2)
# glass.md Table 2: short window 50, long history up to 1000, embedding 96, 8 heads x 32,
# dropout 0.1, AdamW lr 1e-4, patience 50
GLASS_PAPER: dict = {"data.short_len": 50, "data.long_max": 1000, "model.d_model": 96,
                     "model.heads": 8, "model.head_dim": 32, "model.ff": 256, "model.dropout": 0.1,
                     "train.lr": 1e-4, "train.patience": 50}

GLASS_VARIANTS: dict[str, dict] = {
    "tiger": {"model.sid_tier": False, "model.hard_search": False, "model.neighbours": False},
    "sidtier": {"model.sid_tier": True, "model.hard_search": False, "model.neighbours": False},
    "sidtier+shs": {"model.sid_tier": True, "model.hard_search": True, "model.neighbours": False},
    "sidtier+shs+cr": {"model.sid_tier": True, "model.hard_search": True,
                       "model.neighbours": False, "resize": 4},
    "sidtier+shs+cr+sn": {"model.sid_tier": True, "model.hard_search": True,
                          "model.neighbours": True, "resize": 4},
    "fixed-gate": {"model.sid_tier": True, "model.hard_search": True, "model.neighbours": False,
                   "model.gate": "fixed"},
}


class GlassDecoderLayer(DecoderLayer):
    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float,
                 attn_dropout: float, gate: str):
        super().__init__(d, heads, head_dim, ff, dropout, attn_dropout)
        self.ret_cross = Attention(d, heads, head_dim, attn_dropout)  # CrossAttn_φ (eq. 11)
        self.gate_proj = nn.Linear(2 * d, d, bias=False) if gate == "learned" else None  # W_g

    def forward(self, x: torch.Tensor, ctx: dict, inspect: list | None = None) -> torch.Tensor:
        """With ``inspect`` (a list) the layer appends its record: the short-stream attention
        (N, h, T, S), and for rows that retrieved something their indices ``rows``, the gate
        (n, T, d), the retrieval attention on every retrieved token (n, h, T, R·L) and the norm
        of each stream's contribution to Z, (1-g)·Z_short and g·Z_ret, (n, T) each."""
        x = self.self_block(x, ctx.get("cache"))
        h = self.ln_cross(x)
        need = inspect is not None
        z_short, w_short = self.cross(h, kv=ctx["kv"], mask=ctx["mask"], need_weights=need)
        rec = {"attn_short": w_short} if need else None
        z = z_short
        if "ret_rows" in ctx:  # rows that retrieved something; the others keep Z_short (g = 0)
            rows = ctx["ret_rows"]
            zs = z_short[rows]
            zr, w_rows = self.ret_cross.over_vocab(h[rows], ctx["table"], ctx["ret_bias"],
                                                   need_weights=need)  # eq. 11
            zr = zr.to(zs.dtype)
            if self.gate_proj is None:
                g = torch.full_like(zs, 0.5)
            else:
                g = torch.sigmoid(self.gate_proj(torch.cat([zs, zr], -1)))  # eq. 12
            g = g * ctx["use"]  # 0 at the BOS position: the first step has no key yet
            # eq. 13: (1-g)·Z_short + g·Z_ret, in fp32: under autocast Z_short is bf16 and the mix
            # fp32 (g · the fp32 BOS switch). The CPU's autocast promotes index_copy to fp32,
            # CUDA's does not (it refused the mixed dtypes): explicit, both compute the same
            z = z_short.float().index_copy(0, rows, (zs + g * (zr - zs)).float())
            if need:  # attention on each retrieved token: its id's mass shared by its copies
                ids, count = ctx["ret_ids"], ctx["ret_bias"].exp()
                per_id = w_rows / count.clamp_min(1)[:, None, None, :]
                w_tok = per_id.gather(-1, ids[:, None, None, :].expand(-1, *per_id.shape[1:3], -1))
                rec.update(rows=rows, gate=g, attn_ret=w_tok.masked_fill(
                    ctx["ret_pad"][:, None, None, :], 0.0),
                    short_norm=((1 - g) * zs).norm(dim=-1), ret_norm=(g * zr).norm(dim=-1))
        if need:
            inspect.append(rec)
        x = x + self.drop(z)
        return self.ff_block(x)


class Glass(Tiger):
    def __init__(self, sizes: list[int], short_len: int, d: int = 96, heads: int = 8,
                 head_dim: int = 32, ff: int = 256, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1, attn_dropout: float = 0.0, sid_tier: bool = True,
                 tiers: int = 10, tier_scale: str = "log1p", tier_hidden: int = 20,
                 hard_search: bool = True, retrieve_max: int | None = None, gate: str = "learned",
                 neighbours: torch.Tensor | None = None, tau: int = 8):
        self.hard_search, self.gate_mode = hard_search, gate
        super().__init__(sizes, short_len, d, heads, head_dim, ff, enc_layers, dec_layers, dropout,
                         attn_dropout)
        self.sid_tier, self.tiers, self.tier_scale = sid_tier, tiers, tier_scale
        self.retrieve_max, self.tau = retrieve_max, tau
        if sid_tier:
            self.tier_mlp = nn.Sequential(nn.Linear(sizes[0] * tiers, tier_hidden), nn.ReLU(),
                                          nn.Linear(tier_hidden, d))  # eq. 5
            self.tier_type = nn.Parameter(torch.zeros(d))
        self.register_buffer("neighbours", neighbours if neighbours is not None else None,
                             persistent=False)

    @classmethod
    def needs(cls, cfg) -> set[str]:
        m = cfg.model
        return ({"long"} if m.hard_search else set()) | ({"tier"} if m.sid_tier else set()) | (
            {"neighbours"} if m.neighbours else set())

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> Glass:
        m = cfg.model
        return cls(sizes, cfg.data.short_len, m.d_model, m.heads, m.head_dim, m.ff, m.enc_layers,
                   m.dec_layers, m.dropout, m.attn_dropout, sid_tier=m.sid_tier, tiers=m.tiers,
                   tier_scale=m.tier_scale, tier_hidden=m.tier_hidden, hard_search=m.hard_search,
                   retrieve_max=m.retrieve_max, gate=m.gate, tau=m.tau,
                   neighbours=inputs.get("neighbours"))

    def make_decoder(self, d, heads, head_dim, ff, dropout, attn_dropout, n) -> nn.ModuleList:
        if not self.hard_search:
            return super().make_decoder(d, heads, head_dim, ff, dropout, attn_dropout, n)
        return nn.ModuleList(GlassDecoderLayer(d, heads, head_dim, ff, dropout, attn_dropout,
                                               self.gate_mode) for _ in range(n))

    # -- encoder: short-term tokens ‖ e_tier (eq. 6) ----------------------------------------
    def encode(self, batch):
        x, pad = self.embed_short(batch["short"])
        if self.sid_tier:
            t = batch["tier"].float()  # (B, K0, N)
            t = torch.log1p(t) if self.tier_scale == "log1p" else t
            e_tier = self.tier_mlp(t.flatten(1)) + self.tier_type + self.item_pos.weight[-1]
            x = torch.cat([x, e_tier[:, None, :].to(x.dtype)], 1)
            pad = torch.cat([pad, torch.zeros_like(pad[:, :1])], 1)
        state = self.encode_tokens(x, pad)
        if self.hard_search:
            state["long_codes"], state["long_offsets"] = batch["long_codes"], batch["long_offsets"]
        return state

    # -- semantic hard search ----------------------------------------------------------------
    def retrieve(self, long_codes: torch.Tensor, long_offsets: torch.Tensor, key: torch.Tensor,
                 row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of sample ``row[i]``'s long history whose first code is ``key[i]`` (plus
        neighbour codes' items when fewer than τ), most recent first: their positions in
        ``long_codes[row[i]]`` (n, R) and padding (n, R), R the longest retrieval of the batch
        (``retrieve_max`` at most)."""
        off = long_offsets[row]  # (n, K0+1)
        keys = key[:, None]
        if self.neighbours is not None:
            keys = torch.cat([keys, self.neighbours[key]], 1)  # (n, 1+k) in neighbour order
        start = off.gather(1, keys)
        count = off.gather(1, keys + 1) - start  # (n, 1+k)
        if self.neighbours is not None:
            few = count[:, :1] < self.tau
            count = torch.cat([count[:, :1], count[:, 1:] * few], 1)
        cum = count.cumsum(1)
        total = cum[:, -1:]
        if self.retrieve_max is not None:
            total = total.clamp_max(self.retrieve_max)
        R = max(1, int(total.max())) if len(key) else 1  # one host sync per retrieval
        slot = torch.arange(R, device=key.device).expand(len(key), R)
        j = torch.searchsorted(cum, slot.contiguous(), right=True).clamp_max(keys.shape[1] - 1)
        within = slot - (cum.gather(1, j) - count.gather(1, j))
        pad = slot >= total
        return torch.where(pad, 0, start.gather(1, j) + within), pad

    def with_retrieval(self, state: dict, key: torch.Tensor, row: torch.Tensor) -> dict:
        """Retrieve for decoder rows whose first code is ``key`` (rows of samples ``row``). The
        result is kept per retrieval (one per (sample, first code) pair: a beam's children
        share it) and each decoder row points at its retrieval through ``ret_pair``. Stored:
        the retrieved SID tokens (eq. 8: Lookup(H_ret)) as ids and padding, their count, and
        the log multiplicity of every token id, which is all the attention needs."""
        pos, pad = self.retrieve(state["long_codes"], state["long_offsets"], key, row)
        codes = state["long_codes"][row[:, None], pos]
        n, R, L = codes.shape
        ids = self.emb.ids(codes).reshape(n, R * L)
        ret_pad = pad[:, :, None].expand(n, R, L).reshape(n, R * L)
        count = torch.zeros(n, len(self.emb.level_of), device=ids.device)
        count.scatter_add_(1, ids, (~ret_pad).float())
        log_count = count.clamp_min(1).log().masked_fill(count == 0, float("-inf"))
        return {**state, "ret_pair": torch.arange(n, device=key.device), "ret_ids": ids,
                "ret_pad": ret_pad, "ret_bias": log_count, "ret_len": (~pad).sum(1),
                "ret_row": row, "ret_pos": torch.where(pad, -1, pos)}

    def teacher_state(self, state, batch):
        if not self.hard_search:
            return state
        row = torch.arange(batch["target"].shape[0], device=batch["target"].device)
        return self.with_retrieval(state, batch["target"][:, 0], row)  # ground-truth first code

    row_keys = ("ret_pair",)  # a beam inherits its parent's first code, hence its retrieval

    def after_step(self, state, prefix, batch, beams: int):
        """After the first step, retrieve once per beam with its own generated first code
        (never the ground truth); later beams inherit it with their parent (``select``)."""
        if not self.hard_search or "ret_ids" in state:
            return state
        row = torch.arange(len(prefix), device=prefix.device) // beams
        return self.with_retrieval(state, prefix[:, 0].clamp_min(0), row)

    def decoder_context(self, state, x, start):
        """The short-term mask and, once a first code is known, the rows that retrieved items,
        their retrieval's token-count bias and the gate's switch (0 at the BOS position)."""
        ctx = super().decoder_context(state, x, start)
        if not self.hard_search or "ret_ids" not in state:
            return ctx
        use = torch.ones(1, x.shape[1], 1, dtype=x.dtype, device=x.device)
        if start == 0:  # position 0 (BOS) has no key yet: short-term stream alone
            use[:, 0] = 0
        pair = state["ret_pair"]
        rows = (state["ret_len"][pair] > 0).nonzero().squeeze(1)  # one host sync per step
        pair = pair[rows]
        ctx.update(table=self.emb.table(), ret_rows=rows, ret_bias=state["ret_bias"][pair], use=use)
        if self.inspect is not None:
            ctx.update(ret_ids=state["ret_ids"][pair], ret_pad=state["ret_pad"][pair])
        return ctx

    def inspect_record(self, state):
        """Which retrieval each row reads: its sample and the retrieved positions."""
        if not self.hard_search or "ret_ids" not in state:
            return {}
        pair = state["ret_pair"]
        return {"ret_len": state["ret_len"][pair], "ret_row": state["ret_row"][pair],
                "ret_pos": state["ret_pos"][pair]}
