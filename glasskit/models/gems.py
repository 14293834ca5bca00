"""GEMs (gems.md §3): a multi-stream decoder over recent, mid-term and lifecycle behaviour.

- Streams (eq. 1): of the kept history before the target, the ``recent_len`` most recent items
  are the recent stream, items up to ``lifecycle_from`` positions back the mid-term stream, the
  older ones the lifecycle stream. Every item is embedded from its SID codes (the code
  embeddings concatenated, then an MLP: eq. 2 with the features these datasets have).
- Recent stream: self-attention blocks with positions.
- Mid-term stream (eq. 4-7): blocks whose attention is steered by a lightweight indexer with
  ``indexer_heads`` heads: its score S_idx = Σ_h D_h (q_h k_h / sqrt(k)), D = W_D H, is fitted by
  KL to the softmax of the full attention's summed head logits (eq. 6) on a detached copy of
  the input, so the indexer receives no gradient from the main loss; in stage 3 each query
  attends only to the ``top_k`` keys the indexer scores highest. Stages (§3.4) by epoch:
  1 full attention, indexer frozen; 2 indexer trained (λ = ``indexer_weight``), still full
  attention; 3 top-k selection. The KL is taken on ``kl_queries`` sampled queries per sample,
  so the full attention map is never materialised.
- Lifecycle stream (§3.1.2): split into ``memory`` chunks, each compressed into one vector by
  linear attention (elu + 1 features: cost linear in the chunk) from a learned query; a
  generative reconstruction loss asks each vector to predict the next chunk's mean item
  embedding (weight ``recon_weight``); a self-attention block over the compressed vectors.
- Decoder (eq. 9-11): causal self-attention over BOS + SID prefix, then per stream a
  cross-attention and an FFN with residuals, fused by the parameter-free sum
  D = Σ_s D_s*, which counts the residual D′ once per stream, so the stream ablations differ
  in residual scale as well as content; ``stream_sum: residual`` gives D′ + Σ_s (D_s* − D′)
  instead, the same residual whatever the streams. ``fusion`` switches to the alternatives of
  §4.5: (a) ``concat_tokens``, all streams' tokens in one encoder and one cross-attention;
  (b) ``concat_memory``, separate encoders, one cross-attention over their concatenated
  outputs; (c) ``gate``, (d)'s streams weighted by a learned softmax gate over streams.
- ``streams`` ablates streams (gems.md Table 3).

Shapes: B samples, U kept history, L levels, N decoder rows (B·beams), d width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import (
    Attention,
    CausalSelfBlock,
    Dropout,
    EncoderLayer,
    FeedForward,
    SidEmbedding,
    attend_mask,
    sid_loss,
)
from glasskit.models.sid_decoder import SidDecoder

STREAMS = ("recent", "mid", "lifecycle")
FUSIONS = ("sum", "gate", "concat_memory", "concat_tokens")  # (d), (c), (b), (a) of §4.5


@dataclass
class GemsConfig:
    enc_layers: int = 1  # recent-stream self-attention blocks
    mid_layers: int = 1  # mid-term indexer blocks (L_mid)
    dec_layers: int = 2
    recent_len: int | None = None  # T_recent as a count of recent items; None: data.short_len
    lifecycle_from: int | None = None  # items further back are lifecycle; None: short + long_max/2
    indexer_heads: int = 1  # H_indexer << heads
    top_k: int = 32  # keys per query in stage 3; 0: brute-force full attention
    stages: list[int] = field(default_factory=lambda: [2, 2])  # epochs of stages 1 and 2
    # the evaluated checkpoint is a stage-3 one (the top-k attention the paper deploys); true
    # lets any stage's best checkpoint be evaluated (and a run end before stage 3)
    evaluate_any_stage: bool = False
    indexer_weight: float = 1.0  # λ of eq. 13 from stage 2
    kl_queries: int = 16  # queries per sample whose attention the indexer is fitted to
    memory: int = 8  # compressed lifecycle vectors
    recon_weight: float = 0.1
    fusion: str = "sum"
    stream_sum: str = "literal"  # "literal": Σ_s D_s* (eq. 11); "residual": D′ + Σ_s (D_s* − D′)
    streams: list[str] = field(default_factory=lambda: list(STREAMS))

    def validate(self) -> None:
        for name in ("enc_layers", "mid_layers", "dec_layers", "indexer_heads", "kl_queries", "memory"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"model.top_k must be a non-negative integer, got {self.top_k!r}")
        for name in ("recent_len", "lifecycle_from"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"model.{name} must be a positive integer or null, got {value!r}")
        if (not isinstance(self.stages, list | tuple) or len(self.stages) != 2
                or any(not isinstance(s, int) or s < 0 for s in self.stages)):
            raise ConfigError(f"model.stages must be two epoch counts [stage 1, stage 2], "
                              f"got {self.stages!r}")
        for name in ("indexer_weight", "recon_weight"):
            if not (isinstance(getattr(self, name), float | int) and getattr(self, name) >= 0):
                raise ConfigError(f"model.{name} must be non-negative, got {getattr(self, name)!r}")
        if self.stream_sum not in ("literal", "residual"):
            raise ConfigError(f"model.stream_sum must be literal or residual, got {self.stream_sum!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.streams or any(s not in STREAMS for s in self.streams) or "recent" not in self.streams:
            raise ConfigError(f"model.streams must include recent and name only {STREAMS}, "
                              f"got {self.streams!r}")


# stream ablations (gems.md Table 3), fusion strategies (§4.5) and the brute-force mid-term
# attention of Table 5
GEMS_VARIANTS: dict[str, dict] = {
    "recent-only": {"model.streams": ["recent"]},
    "no-mid": {"model.streams": ["recent", "lifecycle"]},
    "no-lifecycle": {"model.streams": ["recent", "mid"]},
    "fusion-a": {"model.fusion": "concat_tokens"},
    "fusion-b": {"model.fusion": "concat_memory"},
    "fusion-c": {"model.fusion": "gate"},
    "full-mid": {"model.top_k": 0},
}
FUSION_VARIANT = {"sum": None, "gate": "fusion-c", "concat_memory": "fusion-b",
                  "concat_tokens": "fusion-a"}  # a fusion strategy's row


# gems.md §4.3.3: RK-Means [8192] x 3; hidden 1024, 8 heads (indexer 2); decoder 4 layers,
# recent stream 4 layers; T_recent = 256, mid-term up to T_lifecycle = 5000 (here the lifecycle
# stream begins at short_len + long_max / 2, so long_max = 2 * (5000 - 256))
GEMS_PAPER: dict = {"tokenizer.method": "rqkmeans", "tokenizer.codebooks": [8192, 8192, 8192],
                    "model.d_model": 1024, "model.heads": 8, "model.head_dim": 128,
                    "model.indexer_heads": 2, "model.dec_layers": 4, "model.enc_layers": 4,
                    "data.short_len": 256, "data.long_max": 9488}


class IndexerBlock(nn.Module):
    """A mid-term block: pre-norm attention steered by the lightweight indexer (eq. 4-7), FFN."""

    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float,
                 indexer_heads: int, kl_queries: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, head_dim)
        self.ff = FeedForward(d, ff)
        self.drop = Dropout(dropout)
        self.hi, self.ki, self.kl_queries = indexer_heads, head_dim, kl_queries
        self.gather_from = 8  # T / k above which gathering beats the masked fused kernel
        self.idx_q = nn.Linear(d, indexer_heads * head_dim)
        self.idx_k = nn.Linear(d, indexer_heads * head_dim)
        self.idx_w = nn.Linear(d, indexer_heads)  # W_D: per-query weights over indexer heads

    def indexer_scores(self, h: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """S_idx (B, Tq, T) of eq. 5 from a detached input: the indexer learns only from its KL.
        ``queries`` (Tq,) picks the query positions (all by default)."""
        h = h.detach()
        B, T, _ = h.shape
        hq = h if queries is None else h[:, queries]
        q = self.idx_q(hq).view(B, -1, self.hi, self.ki).transpose(1, 2)  # (B, hi, Tq, k)
        k = self.idx_k(h).view(B, T, self.hi, self.ki).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) * self.ki ** -0.5  # (B, hi, Tq, T)
        w = self.idx_w(hq).transpose(1, 2)[..., None]  # (B, hi, Tq, 1)
        return (w * s).sum(1)

    def full_scores(self, h: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """S_full of eq. 4 (summed head logits of the block's attention) for ``queries``."""
        B, T, _ = h.shape
        q = self.attn.q(h[:, queries]).view(B, len(queries), self.attn.h, self.attn.k).transpose(1, 2)
        k, _ = self.attn.keys_values(h)
        return ((q @ k.transpose(-1, -2)) * self.attn.k ** -0.5).sum(1)  # (B, Tq, T)

    def sparse_attention(self, h: torch.Tensor, top: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Each query attends to its own keys ``top`` (B, T, k) only (eq. 7): keys and values
        are gathered, so the cost is T·k, not T·T. Selected padding keys get no weight."""
        attn = self.attn
        B, T, _ = h.shape
        q = attn.q(h).view(B, T, attn.h, attn.k)  # (B, T, h, dk)
        k, v = attn.kv(h).view(B, T, 2, attn.h, attn.k).unbind(2)  # (B, T, h, dk) each
        rows = torch.arange(B, device=h.device)[:, None, None]
        ks, vs = k[rows, top], v[rows, top]  # (B, T, k, h, dk)
        scores = torch.einsum("bthd,btkhd->bthk", q, ks) * attn.k ** -0.5
        dead = pad[rows, top]  # (B, T, k)
        scores = scores.masked_fill(dead[:, :, None, :], float("-inf"))
        w = scores.softmax(-1).nan_to_num(0.0)  # a query whose keys are all padding: zeros
        out = torch.einsum("bthk,btkhd->bthd", w, vs).reshape(B, T, attn.h * attn.k)
        return attn.out(out)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, select: int, fit: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d), pad (B, T). ``select`` > 0: each query attends to its top ``select`` keys
        by the indexer (stage 3); ``fit``: also return the indexer's KL to the full attention."""
        h = self.ln1(x)
        B, T, _ = h.shape
        keep = attend_mask(pad)  # (B, 1, 1, T)
        empty = pad.all(1)
        kl = h.new_zeros(())
        if fit:
            queries = torch.randperm(T, device=h.device)[: min(self.kl_queries, T)]
            target = self.full_scores(h, queries).detach().float()
            idx = self.indexer_scores(h, queries).float()
            key_pad = pad[:, None, :]
            p = target.masked_fill(key_pad, float("-inf")).softmax(-1)
            logq = idx.masked_fill(key_pad, float("-inf")).log_softmax(-1)
            valid = ~pad[:, queries] & ~empty[:, None]  # real queries with real keys
            terms = (p * (p.clamp_min(1e-12).log() - logq.clamp_min(-1e4))).sum(-1)
            kl = terms[valid].mean() if valid.any() else kl
        if select and select < T:
            s = self.indexer_scores(h).masked_fill(pad[:, None, :], float("-inf"))  # (B, T, T)
            top = s.topk(select, dim=-1).indices
            if T > self.gather_from * select:  # long streams: gather each query's k keys
                out = self.sparse_attention(h, top, pad)
            else:  # short ones: the same selection as a mask on the fused kernel (faster on CPU)
                chosen = torch.zeros(B, T, T, dtype=torch.bool, device=h.device).scatter_(-1, top, True)
                mask = (chosen & ~pad[:, None, :])[:, None] | empty[:, None, None, None]
                out = self.attn(h, h, mask=mask)[0]
        else:
            out = self.attn(h, h, mask=keep)[0]
        out = out.masked_fill(empty[:, None, None], 0.0)  # all-padding samples get nothing
        x = x + self.drop(out)
        return x + self.drop(self.ff(self.ln2(x))), kl


class LifecycleCompressor(nn.Module):
    """Chunks of the lifecycle stream -> one vector each by linear attention from a learned
    query (cost linear in the stream), a reconstruction loss, a self-attention block."""

    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float, memory: int):
        super().__init__()
        self.memory = memory
        self.query = nn.Parameter(torch.randn(memory, d) * d ** -0.5)
        self.k, self.v = nn.Linear(d, d), nn.Linear(d, d)
        self.predict = nn.Linear(d, d)  # compressed chunk i -> chunk i+1's mean embedding
        self.block = EncoderLayer(d, heads, head_dim, ff, dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d), pad (B, T) -> memory (B, M, d), its padding (B, M), reconstruction loss."""
        B, T, d = x.shape
        M = self.memory
        C = -(-T // M)  # chunk length
        xs = F.pad(x, (0, 0, 0, M * C - T)).view(B, M, C, d)
        ok = (~F.pad(pad, (0, M * C - T), value=True)).view(B, M, C, 1).to(x.dtype)
        phi_q = F.elu(self.query) + 1  # (M, d)
        phi_k = (F.elu(self.k(xs)) + 1) * ok  # (B, M, C, d)
        kv = phi_k.transpose(-1, -2) @ self.v(xs)  # (B, M, d, d): linear attention state
        num = (phi_q[None, :, None, :] @ kv).squeeze(-2)  # (B, M, d)
        den = (phi_q[None] * phi_k.sum(2)).sum(-1, keepdim=True).clamp_min(1e-6)
        mem = num / den
        counts = ok.sum(2)  # (B, M, 1)
        mem_pad = counts[..., 0] == 0
        means = (xs * ok).sum(2) / counts.clamp_min(1)
        both = ~mem_pad[:, :-1] & ~mem_pad[:, 1:]
        recon = ((self.predict(mem[:, :-1]) - means[:, 1:].detach()).pow(2).sum(-1)[both].mean()
                 if both.any() else x.new_zeros(()))
        mem = self.block(mem, attend_mask(mem_pad)).masked_fill(mem_pad[..., None], 0.0)
        return mem, mem_pad, recon


class GemsDecoderLayer(CausalSelfBlock, nn.Module):
    """Causal self-attention, then per stream a cross-attention and an FFN with residuals, fused
    by the parameter-free sum (eq. 10-11) or a learned gate over streams (§4.5 c)."""

    def __init__(self, d: int, heads: int, head_dim: int, ff: int, dropout: float,
                 streams: list[str], gate: bool, residual: bool = False):
        super().__init__()
        self.streams, self.residual = list(streams), residual
        self.ln_self = nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, head_dim)
        self.ln_cross = nn.ModuleDict({s: nn.LayerNorm(d) for s in streams})
        self.cross = nn.ModuleDict({s: Attention(d, heads, head_dim) for s in streams})
        self.ln_ff = nn.ModuleDict({s: nn.RMSNorm(d) for s in streams})
        self.ff = nn.ModuleDict({s: FeedForward(d, ff) for s in streams})
        self.gate = nn.Linear(d, len(streams)) if gate else None
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: dict, inspect: list | None = None) -> torch.Tensor:
        x = self.self_block(x, ctx.get("cache"))
        parts, rec = [], {}
        for s in self.streams:
            z, w = self.cross[s](self.ln_cross[s](x), kv=ctx["kv"][s], mask=ctx["mask"][s],
                                 need_weights=inspect is not None)
            d_s = x + self.drop(z)
            inc = d_s - x + self.drop(self.ff[s](self.ln_ff[s](d_s)))  # D_s* - x of eq. 10
            has = ctx["has"][s]  # (B,): a sample without this stream gets nothing from it
            inc = inc * has.repeat_interleave(len(x) // len(has)).to(inc.dtype)[:, None, None]
            parts.append(x + inc)
            if inspect is not None:
                rec[s] = inc.norm(dim=-1)  # (N, T): the stream's increment to the residual
                if s in ctx["segments"]:  # one memory holding every stream: mass on each
                    seg = F.one_hot(ctx["segments"][s], len(STREAMS)).to(w.dtype)  # (S, 3)
                    rec["mass"] = w.mean(1) @ seg  # (N, T, 3)
        if self.gate is None and self.residual:  # D′ + Σ_s (D_s* − D′)
            out = x + torch.stack(parts).sum(0) - len(parts) * x
        elif self.gate is None:
            out = torch.stack(parts).sum(0)  # eq. 11: no parameters
        else:
            g = self.gate(x).softmax(-1)  # (N, T, S)
            out = (torch.stack(parts, -1) * g[..., None, :]).sum(-1) * len(parts)
            if inspect is not None:
                rec["gate"] = g
        if inspect is not None:
            inspect.append(rec)
        return out


class Gems(SidDecoder):
    def __init__(self, sizes: list[int], recent_len: int, lifecycle_from: int, history: int,
                 d: int = 64, heads: int = 4, head_dim: int = 16, ff: int = 128,
                 enc_layers: int = 1, mid_layers: int = 1, dec_layers: int = 2, dropout: float = 0.1,
                 indexer_heads: int = 1, top_k: int = 32, stages: tuple[int, int] = (2, 2),
                 indexer_weight: float = 1.0, kl_queries: int = 16, memory: int = 8,
                 recon_weight: float = 0.1, fusion: str = "sum", streams: tuple[str, ...] = STREAMS,
                 evaluate_any_stage: bool = False, stream_sum: str = "literal"):
        super().__init__()
        if not recent_len < lifecycle_from < history:
            raise ConfigError(f"GEMs needs recent_len ({recent_len}) < lifecycle_from "
                              f"({lifecycle_from}) < the kept history ({history}): every stream "
                              "needs positions")
        self.sizes, self.levels, self.d = list(sizes), len(sizes), d
        self.recent_len, self.lifecycle_from, self.history = recent_len, lifecycle_from, history
        self.top_k, self.stage_epochs = top_k, tuple(stages)
        self.evaluate_any_stage = evaluate_any_stage
        self.indexer_weight, self.recon_weight = indexer_weight, recon_weight
        self.fusion, self.streams = fusion, [s for s in STREAMS if s in streams]
        self.register_buffer("stage", torch.tensor(1))  # saved with checkpoints
        self.emb = SidEmbedding(sizes, d)
        self.item_mlp = nn.Sequential(nn.Linear(len(sizes) * d, d), nn.GELU(), nn.Linear(d, d))
        self.pos = nn.Embedding(history + 1, d)  # by age, 1 = most recent
        self.recent = nn.ModuleList(EncoderLayer(d, heads, head_dim, ff, dropout)
                                    for _ in range(enc_layers))
        if "mid" in self.streams:
            self.mid = nn.ModuleList(IndexerBlock(d, heads, head_dim, ff, dropout, indexer_heads,
                                                  kl_queries) for _ in range(mid_layers))
        if "lifecycle" in self.streams:
            self.lifecycle = LifecycleCompressor(d, heads, head_dim, ff, dropout, memory)
        self.enc_norm = nn.ModuleDict({s: nn.LayerNorm(d) for s in self.streams})
        dec_streams = ["all"] if fusion in ("concat_memory", "concat_tokens") else self.streams
        self.decoder = nn.ModuleList(GemsDecoderLayer(d, heads, head_dim, ff, dropout, dec_streams,
                                                      gate=fusion == "gate",
                                                      residual=stream_sum == "residual")
                                     for _ in range(dec_layers))
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_pos = nn.Embedding(len(sizes), d)
        self.dec_norm = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in sizes)
        self.drop = Dropout(dropout)
        self.inspect: list | None = None

    @classmethod
    def needs(cls, cfg) -> set[str]:
        return {"history"}

    @classmethod
    def history(cls, cfg) -> int:
        return cfg.data.short_len + cfg.data.long_max

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> Gems:
        m, data = cfg.model, cfg.data
        recent = m.recent_len or data.short_len
        life = m.lifecycle_from or data.short_len + data.long_max // 2
        return cls(sizes, recent, life, cls.history(cfg), m.d_model, m.heads, m.head_dim, m.ff,
                   m.enc_layers, m.mid_layers, m.dec_layers, m.dropout, m.indexer_heads, m.top_k,
                   m.stages, m.indexer_weight, m.kl_queries, m.memory, m.recon_weight, m.fusion,
                   m.streams, m.evaluate_any_stage, m.stream_sum)

    def stage_at(self, epoch: int) -> int:
        """The training stage of §3.4 for a 0-based epoch."""
        s1, s2 = self.stage_epochs
        return 1 if epoch < s1 else 2 if epoch < s1 + s2 else 3

    def set_epoch(self, epoch: int) -> None:
        self.stage.fill_(self.stage_at(epoch))

    def final_stage_epoch(self) -> int:
        """The first 0-based epoch whose checkpoint may be evaluated: stage 3's, so that a
        reported GEMs row uses its indexer (``evaluate_any_stage``: 0)."""
        return 0 if self.evaluate_any_stage else sum(self.stage_epochs)

    # -- encoders -------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        hist = batch["hist"]  # (B, U, L), most recent last
        B, U, L = hist.shape
        age = torch.arange(U, 0, -1, device=hist.device)
        pad = hist[..., 0] < 0
        x = self.item_mlp(self.emb(hist).reshape(B, U, L * self.d))
        x = self.drop(x + self.pos.weight[age.clamp_max(self.history)])
        parts = {"recent": age <= self.recent_len,
                 "mid": (age > self.recent_len) & (age <= self.lifecycle_from),
                 "lifecycle": age > self.lifecycle_from}
        stage = int(self.stage)
        aux = x.new_zeros(())
        mems: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.fusion == "concat_tokens":  # (a): one encoder over every stream's tokens
            keep = torch.zeros(U, dtype=torch.bool, device=hist.device)
            for s in self.streams:
                keep |= parts[s]
            h, p = x[:, keep], pad[:, keep]
            for layer in self.recent:
                h = layer(h, attend_mask(p))
            mems["all"] = (self.enc_norm["recent"](h), p)
        else:
            h, p = x[:, parts["recent"]], pad[:, parts["recent"]]
            for layer in self.recent:
                h = layer(h, attend_mask(p))
            mems["recent"] = (self.enc_norm["recent"](h), p)
            if "mid" in self.streams:
                h, p = x[:, parts["mid"]], pad[:, parts["mid"]]
                select = self.top_k if stage == 3 else 0
                fit = self.training and stage >= 2 and self.indexer_weight > 0
                for block in self.mid:
                    h, kl = block(h, p, select, fit)
                    aux = aux + self.indexer_weight * kl
                mems["mid"] = (self.enc_norm["mid"](h), p)
            if "lifecycle" in self.streams:
                h, p, recon = self.lifecycle(x[:, parts["lifecycle"]], pad[:, parts["lifecycle"]])
                aux = aux + self.recon_weight * recon
                mems["lifecycle"] = (self.enc_norm["lifecycle"](h), p)
            lengths = {s: m.shape[1] for s, (m, _) in mems.items()}
            if self.fusion == "concat_memory":  # (b): one cross-attention over all memories
                mems = {"all": (torch.cat([m for m, _ in mems.values()], 1),
                                torch.cat([p for _, p in mems.values()], 1))}
        mask, has, segments = {}, {}, {}
        if "all" in mems:  # which stream each memory position came from (for inspection)
            if self.fusion == "concat_tokens":
                label = torch.full((U,), -1, dtype=torch.long, device=hist.device)
                for i, s in enumerate(STREAMS):
                    label[parts[s]] = i
                segments["all"] = label[keep]
            else:
                segments["all"] = torch.cat([torch.full((len_s,), STREAMS.index(s), device=hist.device)
                                             for s, len_s in lengths.items()])
        for name, (_, p) in mems.items():
            has[name] = ~p.all(1)
            mask[name] = attend_mask(p & has[name][:, None])  # empty: attends, then zeroed
        return {"mem": next(iter(mems.values()))[0], "mems": mems, "mask": mask, "has": has, "aux": aux,
                "segments": segments,
                "kv": [{s: layer.cross[s].keys_values(mems[s][0]) for s in layer.streams}
                       for layer in self.decoder]}

    # -- decoder --------------------------------------------------------------------------------
    def decoder_context(self, state: dict, x: torch.Tensor, start: int) -> dict:
        """Per stream: its memory's mask, whether each sample has the stream at all, and which
        stream each position of a concatenated memory came from."""
        return {"mask": state["mask"], "has": state["has"], "segments": state["segments"]}

    def objective(self, logits: list[torch.Tensor], batch: dict[str, torch.Tensor],
                  state: dict) -> torch.Tensor:
        """Eq. 13: NTP + the indexer's KL (stage >= 2) + the lifecycle reconstruction."""
        return sid_loss(logits, batch["target"]) + state["aux"]
