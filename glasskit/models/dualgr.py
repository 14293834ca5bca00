"""DualGR (Yi et al., 2025; dualgr.md §2): generative retrieval with a dual-branch router,
search-based SID decoding and an exposure-aware loss, on an encoder-free decoder.

- Frontend (eq. 6): no encoder. The context is the sample's kept history as a list of actions,
  one token per item: the sum of its SID code embeddings plus its recency, then LayerNorm
  (no static user features: the datasets have none). The decoder (BOS + SID prefix) reads it
  step by step through cross-attention; keys and values are projected once per sample.
- Dual-Branch Router (eq. 3-7): the long window is the last ``long_window`` actions, the short
  one the last ``short_window``. Each is summarised by the mean of its actions' level-1 code
  embeddings (E_vocab^(1)). In training the first SID token reads the window whose summary has
  the higher cosine with the target's level-1 embedding (eq. 5; a hard, gradient-free choice).
  At inference both branches are decoded by beam search and their candidates merged, an item
  keeping its best score (``branches``).
- Search-based SID Decoding (eq. 8-9): the tokens after the first read only the actions of the
  whole kept history whose first code is the sequence's first code (the target's in training,
  each beam's generated one at inference); an empty search falls back to the routed window.
  Without S2D they read the routed window too.
- ENTP loss (eq. 10): next-token cross-entropy on every level of the positives, plus
  ``alpha · -log(1 - p1)`` for exposure negatives; each negative is its own tuple: p1 is the
  level-1 probability of its first code with the sample's history routed by that code (eq. 5);
  the sum is divided by the number of positives and negatives (``loss_weights`` says what that
  gives each term). Without negatives in the data (MovieLens unless ``data.min_rating`` sets the
  proxy) it is plain NTP, and the ``no-entp`` row is refused there.
- Diagnostics (acc_i, P_i, CRP, Hrecall) follow the merged ranking, never the label's route
  (glasskit.ranking).

Ablation rows (dualgr.md Table 2): ``no-dbr`` (long branch only), ``no-s2d``, ``no-entp``.
Shapes: B samples, U kept history, L levels, N decoder rows (B·beams), d width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import DecoderLayer, Dropout, SidEmbedding, sid_loss
from glasskit.models.sid_decoder import SidDecoder


@dataclass
class DualgrConfig:
    layers: int = 2  # decoder blocks (dualgr.md §3: 4 at industrial scale)
    short_window: int | None = None  # L_short; None: data.short_len
    long_window: int | None = None  # L_long; None: data.short_len + data.long_max
    dbr: bool = True  # the Dual-Branch Router; off: the long branch only
    s2d: bool = True  # search-based decoding of the tokens after the first
    entp: bool = True  # exposure negatives in the loss (where the data has them)
    alpha: float = 0.1  # eq. 10 (dualgr.md §3: 0.1)
    negatives: int = 4  # exposure negatives per sample: the most recent before the target

    def validate(self) -> None:
        for name in ("layers", "negatives"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        for name in ("short_window", "long_window"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"model.{name} must be a positive integer or null, got {value!r}")
        if not (isinstance(self.alpha, float | int) and self.alpha >= 0):
            raise ConfigError(f"model.alpha must be non-negative, got {self.alpha!r}")


# dualgr.md §2.2 and §3: RQ-KMeans, L = 3 of 8192; 4 blocks, d 512, 8 heads, FFN 1024;
# |H_t| = L_long = 1000, L_short = 64; alpha 0.1
DUALGR_PAPER: dict = {"tokenizer.method": "rqkmeans", "tokenizer.codebooks": [8192, 8192, 8192],
                      "model.layers": 4, "model.d_model": 512, "model.heads": 8, "model.head_dim": 64,
                      "model.ff": 1024, "model.short_window": 64, "model.long_window": 1000,
                      "model.alpha": 0.1}

DUALGR_VARIANTS: dict[str, dict] = {
    "no-dbr": {"model.dbr": False},
    "no-s2d": {"model.s2d": False},
    "no-entp": {"model.entp": False},
}


class DualGR(SidDecoder):
    def __init__(self, sizes: list[int], first_codes: torch.Tensor, short_window: int,
                 long_window: int, d: int = 64, heads: int = 4, head_dim: int = 16, ff: int = 128,
                 layers: int = 2, dropout: float = 0.1, attn_dropout: float = 0.0, dbr: bool = True,
                 s2d: bool = True, entp: bool = True, alpha: float = 0.1):
        super().__init__()
        if short_window > long_window:
            raise ConfigError(f"DualGR short window ({short_window}) exceeds the long one ({long_window})")
        self.sizes, self.levels, self.d = list(sizes), len(sizes), d
        self.short_window, self.long_window = short_window, long_window
        self.s2d, self.entp, self.alpha = s2d, entp, alpha
        self.branches = ("long", "short") if dbr else ("long",)
        self.register_buffer("first_codes", first_codes, persistent=False)  # item -> level-1 code
        self.emb = SidEmbedding(sizes, d)
        self.age = nn.Embedding(long_window + 1, d)  # 1 = the most recent action
        self.act_norm = nn.LayerNorm(d)  # eq. 6: embeddings + LayerNorm
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_pos = nn.Embedding(len(sizes), d)
        self.decoder = nn.ModuleList(DecoderLayer(d, heads, head_dim, ff, dropout, attn_dropout)
                                     for _ in range(layers))
        self.dec_norm = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in sizes)
        self.drop = Dropout(dropout)
        self.inspect: list | None = None

    @classmethod
    def windows(cls, cfg) -> tuple[int, int]:
        m, data = cfg.model, cfg.data
        return (m.short_window or data.short_len, m.long_window or data.short_len + data.long_max)

    @classmethod
    def needs(cls, cfg) -> set[str]:
        return {"history", "first_codes"} | ({"negatives"} if cfg.model.entp else set())

    @classmethod
    def check_data(cls, cfg, ds) -> None:
        if not cfg.model.entp and ds.negatives is None:
            raise ConfigError(
                f"model.entp=false (the no-entp row) on {cfg.data.dataset}, which has no exposure "
                "negatives: without them DualGR's loss is plain next-token prediction already, so "
                "the row would equal DualGR. Use data with negatives (KuaiRec's watch_ratio, or "
                "on rated data the ratings below data.min_rating, e.g. --set data.min_rating=4)")

    @classmethod
    def history(cls, cfg) -> int:
        return cls.windows(cfg)[1]

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> DualGR:
        m = cfg.model
        short, long = cls.windows(cfg)
        return cls(sizes, inputs["first_codes"], short, long, m.d_model, m.heads, m.head_dim, m.ff,
                   m.layers, m.dropout, m.attn_dropout, m.dbr, m.s2d, m.entp, m.alpha)

    # -- the action list (frontend) -------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        """Actions of the kept history (B, U, d), the two windows, and every decoder layer's
        keys/values over the actions. ``batch["branch"]`` (inference) picks the window the
        first token reads; in training the router picks it per sample."""
        hist = batch["hist"]  # (B, U, L)
        B, U, L = hist.shape
        valid = hist[..., 0] >= 0
        x = (self.emb(hist) * valid[..., None, None]).sum(2)  # (B, U, d)
        age = torch.arange(U, 0, -1, device=hist.device)
        x = self.drop(self.act_norm(x + self.age.weight[age.clamp_max(self.long_window)]))
        windows = {"long": valid & (age <= self.long_window), "short": valid & (age <= self.short_window)}
        state = {"mem": x, "kv": [layer.cross.keys_values(x) for layer in self.decoder],
                 "valid": valid, "hist_first": hist[..., 0], "windows": windows}
        branch = batch.get("branch")
        if branch is not None:
            state["window"] = windows[branch]
        return state

    def prefers_long(self, state: dict, first: torch.Tensor) -> torch.Tensor:
        """Eq. 5: True where the long window's mean level-1 code embedding has a cosine with the
        embedding of ``first`` (level-1 codes, (B,) or (B, M)) at least the short one's."""
        if len(self.branches) == 1:
            return torch.ones_like(first, dtype=torch.bool)
        with torch.no_grad():
            e1 = self.emb.tok.weight[1:1 + self.sizes[0]]  # E_vocab^(1)
            hist = e1[state["hist_first"].clamp_min(0)]  # (B, U, d)
            target = e1[first]  # (B, [M,] d)
            gamma = {}
            for name, w in state["windows"].items():
                r = (hist * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)  # (B, d)
                gamma[name] = F.cosine_similarity(target, r.view(r.shape[0], *[1] * (first.dim() - 1),
                                                                   -1), dim=-1)
            return gamma["long"] >= gamma["short"]

    def route(self, state: dict, first: torch.Tensor) -> torch.Tensor:
        """Eq. 5: per sample, the window (B, U) the router picks for level-1 code ``first`` (B,)."""
        return torch.where(self.prefers_long(state, first)[:, None], state["windows"]["long"],
                           state["windows"]["short"])

    def context_mask(self, state: dict, window: torch.Tensor, keys: torch.Tensor | None,
                     rows: int, positions: range) -> torch.Tensor:
        """(B, 1, r·T, U) actions each query may read: position 0 the window, later positions the
        same-first-code actions of the row's first code ``keys`` (N,) (S2D), or the window when
        S2D is off or finds nothing."""
        B, U = state["valid"].shape
        r = rows // B
        win = window[:, None, :].expand(B, r, U)
        per_pos = []
        for p in positions:
            if p == 0 or not self.s2d or keys is None:
                per_pos.append(win)
                continue
            found = (state["hist_first"][:, None, :] == keys.view(B, r)[:, :, None]) & state["valid"][:, None]
            per_pos.append(torch.where(found.any(-1, keepdim=True), found, win))
        mask = torch.stack(per_pos, 2)  # (B, r, T, U)
        return mask.reshape(B, 1, r * len(positions), U)

    # -- decoder --------------------------------------------------------------------------------
    def decoder_context(self, state: dict, x: torch.Tensor, start: int) -> dict:
        """The actions each position may read: the routed window (or, at inference, the
        branch's), or from the second position on the search with the row's first code."""
        window = state.get("window", state["windows"][self.branches[0]])
        return {"mask": self.context_mask(state, window, state.get("first"), x.shape[0],
                                          range(start, start + x.shape[1]))}

    def teacher_state(self, state: dict, batch: dict[str, torch.Tensor]) -> dict:
        """Teacher forcing: the router picks each sample's window from its target's first code
        (eq. 5; training) unless the batch names a branch (diagnostics), and the search uses
        the target's first code (eq. 8)."""
        first = batch["target"][:, 0]
        window = state["window"] if "window" in state else self.route(state, first)
        return {**state, "window": window, "first": first}

    def objective(self, logits: list[torch.Tensor], batch: dict[str, torch.Tensor],
                  state: dict) -> torch.Tensor:
        negatives = batch.get("negatives") if self.entp else None
        if negatives is None or not (negatives >= 0).any():
            return sid_loss(logits, batch["target"])
        return self.entp_loss(logits, batch["target"],
                              self.negative_level1(state, negatives, logits[0]), negatives >= 0)

    def negative_level1(self, state: dict, negatives: torch.Tensor,
                        first_logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M) each exposure negative's level-1 probability p_i^(1) as its own tuple of eq. 10:
        the sample's history (the negatives were exposed at the target's request) routed by
        the negative's own level-1 code (eq. 5), read by the first decoder position. With one
        branch every tuple reads the long window, as the positive did: its level-1 logits
        ``first_logits`` serve."""
        codes = self.first_codes[negatives.clamp_min(0)]  # (B, M)
        if len(self.branches) == 1 and first_logits is not None:
            return first_logits.float().softmax(-1).gather(1, codes)
        B = codes.shape[0]
        start = self.decoder_input(codes.new_zeros(B, 0))  # BOS alone
        probs = {}
        for name in self.branches:
            h = self.run_decoder(start, {**state, "window": state["windows"][name], "cache": None})
            probs[name] = self.logits(h[:, 0], 0).softmax(-1).gather(1, codes)
        if len(self.branches) == 1:
            return probs[self.branches[0]]
        return torch.where(self.prefers_long(state, codes), probs["long"], probs["short"])

    def entp_loss(self, logits: list[torch.Tensor], target: torch.Tensor, p_neg: torch.Tensor,
                  ok: torch.Tensor) -> torch.Tensor:
        """Eq. 10: the sum over the batch's positives (cross-entropy at every level) and its
        exposure negatives ``ok`` (B, M) (``-alpha log(1 - p_neg)``, p_neg clipped to
        [1e-6, 1 - 1e-6]), divided by N = positives + negatives (see ``loss_weights``)."""
        pos = torch.stack([F.cross_entropy(lg.float(), target[:, i], reduction="sum")
                           for i, lg in enumerate(logits)]).sum()
        neg = -torch.log1p(-p_neg.float().clamp(1e-6, 1 - 1e-6))[ok].sum()
        return (pos + self.alpha * neg) / (target.shape[0] + int(ok.sum()))

    def loss_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """What eq. 10's 1/N gives each term on ``batch``: the weight of a positive's NTP term
        relative to plain NTP (N_pos / N) and of a negative's term (alpha N_pos / N, on the
        same scale). None when the loss is plain NTP."""
        negatives = batch.get("negatives") if self.entp else None
        if negatives is None or not (negatives >= 0).any():
            return None
        n_pos, n_neg = negatives.shape[0], int((negatives >= 0).sum())
        share = n_pos / (n_pos + n_neg)
        return {"negatives_per_positive": n_neg / n_pos, "positive_weight": share,
                "negative_weight": self.alpha * share}

    # -- incremental decoding (beam search) -------------------------------------------------------
    row_keys = ("first",)

    def start_decoding(self, state: dict) -> dict:
        if "window" not in state:
            state = {**state, "window": state["windows"][self.branches[0]]}
        return super().start_decoding(state)

    def step_logits(self, state: dict, prefix: torch.Tensor) -> torch.Tensor:
        """Logits of the next code after ``prefix`` (N, l), decoding the whole prefix; its first
        code is the search key."""
        return super().step_logits({**state, "first": prefix[:, 0]} if prefix.shape[1] else state,
                                   prefix)

    def after_step(self, state: dict, prefix: torch.Tensor, batch: dict, beams: int) -> dict:
        """After the first step each beam searches with its own generated first code (S2D)."""
        if "first" in state:
            return state
        return {**state, "first": prefix[:, 0].clamp_min(0)}
