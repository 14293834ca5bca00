"""IntRR (intrr.md §3): a recursive-assignment network (RAN) shared between the item side and
the user side, so that the backbone reads one token per item instead of L flattened SID tokens.

- RAN (eq. 4-6): L trainable codebooks V_l (K_l, d). At level l the hidden state is the guidance
  signal x (l = 1) or MLP_l([x ‖ z_<l]), z_<l the sum of the earlier levels' contexts; the
  assignment is p_l = softmax(h_l V_l^T). The level's context z_l is Σ_k p_l(k) V_l(k)
  (redistribution) or V_l(c_l) (teacher forcing).
- Item side (eq. 7-8): every item's ID embedding guides the RAN in redistribution mode; its
  representation is E_i = Σ_l z_l, anchored to the item's SID by the alignment loss
  L_aln = -Σ_l log p_l(c_l).
- User side (eq. 9-10): a Transformer backbone over the history's E_i (one token per item, with
  positions) gives h_u (the most recent position); the RAN decodes the target's SID from h_u with
  teacher forcing, L_rec = -Σ_l log p_l(c_l).
- Joint loss (eq. 11): L_rec + λ L_aln. Eq. 8 sums L_aln over the item set I: ``align_items =
  "catalogue"`` (the default) averages it over every item each step; ``"batch"`` over the items the
  batch holds (its histories and targets), the usual mini-batch estimate.
- Inference: one backbone pass, then beam search over the RAN alone (constrained to existing
  SIDs): level l's logits depend only on h_u and the beam's codes so far.

Ablation rows (intrr.md Table 4): ``no-user-tf`` (the user side decodes in redistribution mode
during training too), ``no-aln`` (λ = 0), ``no-redistribution`` (the item side looks up its SID
path: E_i = Σ_l V_l(c_l)), ``no-shared-ran`` (separate RANs for the item and the user side).

Shapes: B batch, S history items, L levels, d width, V catalogue size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import Dropout, EncoderLayer, attend_mask, sid_loss


@dataclass
class IntrrConfig:
    layers: int = 2  # backbone blocks (intrr.md §4.1: 4)
    max_len: int | None = None  # history items read; None: data.short_len (the SID models' window)
    align_weight: float = 0.1  # λ of eq. 11 (intrr.md §4.1: 0.1)
    user_tf: bool = True  # user side trained with teacher forcing (ground-truth context z_<l)
    redistribution: bool = True  # item side in redistribution mode (else a lookup of its SID path)
    shared_ran: bool = True  # one RAN for both sides (else an independent one for the user side)
    align_items: str = "catalogue"  # L_aln over every item ("catalogue", eq. 8) or the batch's items

    def validate(self) -> None:
        if not isinstance(self.layers, int) or self.layers < 1:
            raise ConfigError(f"model.layers must be a positive integer, got {self.layers!r}")
        if self.max_len is not None and (not isinstance(self.max_len, int) or self.max_len < 1):
            raise ConfigError(f"model.max_len must be a positive integer or null, got {self.max_len!r}")
        if not (isinstance(self.align_weight, float | int) and self.align_weight >= 0):
            raise ConfigError(f"model.align_weight must be non-negative, got {self.align_weight!r}")
        if self.align_items not in ("catalogue", "batch"):
            raise ConfigError(f"model.align_items must be 'catalogue' (eq. 8: every item) or 'batch' "
                              f"(the batch's history and target items), got {self.align_items!r}")


INTRR_VARIANTS: dict[str, dict] = {
    "no-user-tf": {"model.user_tf": False},
    "no-aln": {"model.align_weight": 0.0},
    "no-redistribution": {"model.redistribution": False},
    "no-shared-ran": {"model.shared_ran": False},
}


# intrr.md §4.1: L = 4 levels of K = 128; the T5 backbone of 4 layers, width 256, 6 heads;
# Adam lr 1e-3, weight decay 1e-4, batch 512; lambda 0.1
INTRR_PAPER: dict = {"tokenizer.codebooks": [128, 128, 128, 128], "model.layers": 4,
                     "model.d_model": 256, "model.heads": 6, "model.head_dim": 64,
                     "model.align_weight": 0.1, "train.lr": 1e-3, "train.weight_decay": 1e-4,
                     "train.batch_size": 512}


class RAN(nn.Module):
    """The recursive-assignment network, shared by the item and the user side."""

    def __init__(self, sizes: list[int], d: int):
        super().__init__()
        self.sizes = list(sizes)
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(k, d) * d ** -0.5) for k in sizes)
        self.fuse = nn.ModuleList(nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
                                  for _ in sizes[1:])  # MLP_l of eq. 4, l > 1

    def hidden(self, x: torch.Tensor, context: torch.Tensor | None, level: int) -> torch.Tensor:
        """Eq. 4: h_l from the guidance x (N, d) and z_<l (N, d) (None at the first level)."""
        return x if level == 0 else self.fuse[level - 1](torch.cat([x, context], -1))

    def logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Eq. 5 before the softmax: h_l V_l^T (N, K_l), in fp32."""
        with torch.autocast(h.device.type, enabled=False):
            return h.float() @ self.codebooks[level].float().T

    def run(self, x: torch.Tensor, codes: torch.Tensor | None = None
            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """All levels for guidance x (N, d): with ``codes`` (N, L) in teacher-forcing mode,
        else in redistribution mode. Returns the logits per level and Σ_l z_l (N, d)."""
        context, total, out = None, 0.0, []
        for level in range(len(self.sizes)):
            lg = self.logits(self.hidden(x, context, level), level)
            out.append(lg)
            if codes is None:  # eq. 6: Σ_k p_l(k) V_l(k)
                z = lg.softmax(-1).to(x.dtype) @ self.codebooks[level].to(x.dtype)
            else:  # teacher forcing: the ground-truth codeword
                z = self.codebooks[level][codes[:, level]].to(x.dtype)
            context = z if context is None else context + z
            total = total + z
        return out, total

    def context(self, prefix: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """z_<l of the codes ``prefix`` (N, l) (hard lookups, as in teacher forcing)."""
        if prefix.shape[1] == 0:
            return None
        return sum(self.codebooks[m][prefix[:, m]].to(dtype) for m in range(prefix.shape[1]))


class IntRR(nn.Module):
    def __init__(self, sizes: list[int], item_codes: torch.Tensor, max_len: int, d: int = 64,
                 heads: int = 4, head_dim: int = 16, ff: int = 128, layers: int = 2,
                 dropout: float = 0.1, attn_dropout: float = 0.0, align_weight: float = 0.1,
                 user_tf: bool = True, redistribution: bool = True, shared_ran: bool = True,
                 align_items: str = "catalogue"):
        super().__init__()
        self.sizes, self.levels, self.max_len, self.d = list(sizes), len(sizes), max_len, d
        self.align_weight, self.user_tf, self.redistribution = align_weight, user_tf, redistribution
        self.align_items = align_items
        self.register_buffer("item_codes", item_codes, persistent=False)  # (V, L) static SIDs
        self.uid = nn.Embedding(len(item_codes), d)  # e_uid: the collaborative guidance
        nn.init.normal_(self.uid.weight, std=d ** -0.5)
        self.ran = RAN(sizes, d)
        self.pos = nn.Embedding(max_len, d)
        self.backbone = nn.ModuleList(EncoderLayer(d, heads, head_dim, ff, dropout, attn_dropout)
                                      for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.drop = Dropout(dropout)
        self.separate_ran = None if shared_ran else RAN(sizes, d)  # w/o Shared RAN: the user side's

    @property
    def user_ran(self) -> RAN:
        """The RAN the user side decodes with: the shared one, unless ``shared_ran`` is off."""
        return self.ran if self.separate_ran is None else self.separate_ran

    @classmethod
    def needs(cls, cfg) -> set[str]:
        return {"items", "item_codes"}

    @classmethod
    def window(cls, cfg) -> int:
        return cfg.model.max_len or cfg.data.short_len

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> IntRR:
        m = cfg.model
        return cls(sizes, inputs["item_codes"], cls.window(cfg), m.d_model, m.heads, m.head_dim,
                   m.ff, m.layers, m.dropout, m.attn_dropout, m.align_weight, m.user_tf,
                   m.redistribution, m.shared_ran, m.align_items)

    def item_side(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Eq. 7: E_i for every catalogue item (V, d), and the RAN's logits per level (without
        redistribution: E_i is the lookup of the item's SID path)."""
        logits, e = self.ran.run(self.uid.weight, None if self.redistribution else self.item_codes)
        return e, logits

    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        """One backbone pass: h_u (B, d) from the history's item representations (one token per
        item), and the item side's logits for the alignment loss."""
        seq = batch["seq"]  # (B, S) item indices, -1 = padding (left)
        e, item_logits = self.item_side()
        x = torch.where(seq[..., None] >= 0, e[seq.clamp_min(0)], 0.0)
        x = self.drop(x + self.pos.weight[self.max_len - seq.shape[1]:])
        mask = attend_mask(seq < 0)
        for block in self.backbone:
            x = block(x, mask)
        h = self.norm(x)[:, -1]  # the most recent position (windows are left-padded)
        return {"mem": h[:, None], "h": h, "item_logits": item_logits}

    def forward(self, batch: dict[str, torch.Tensor], loss: bool = False):
        """Teacher-forced logits of every level [(B, K_l)] (eq. 10), or with ``loss`` eq. 11."""
        state = self.encode(batch)
        target = batch["target"]
        logits, _ = self.user_ran.run(state["h"], target if self.user_tf else None)
        if not loss:
            return logits
        return sid_loss(logits, target) + self.align_weight * self.align_loss(state, batch)

    def align_loss(self, state: dict, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 8, averaged over every catalogue item or over the items the batch holds."""
        item_logits = state["item_logits"]
        if self.align_items == "catalogue":
            return sid_loss(item_logits, self.item_codes)
        seq = batch["seq"]
        ids = torch.unique(torch.cat([seq[seq >= 0], batch["target_item"].to(seq.device)]))
        return sid_loss([lg[ids] for lg in item_logits], self.item_codes[ids])

    # -- beam search over the RAN ---------------------------------------------------------------
    row_keys = ()

    def start_decoding(self, state: dict) -> dict:
        return state

    def decode_step(self, state: dict, prefix: torch.Tensor) -> torch.Tensor:
        """Logits of the next code after ``prefix`` (N, l): only the RAN runs (h_u is shared by
        a sample's beams)."""
        level, N = prefix.shape[1], prefix.shape[0]
        h = state["h"]
        x = h.repeat_interleave(N // h.shape[0], 0)
        ran = self.user_ran
        return ran.logits(ran.hidden(x, ran.context(prefix, x.dtype), level), level)

    step_logits = decode_step

    def select(self, state: dict, rows: torch.Tensor) -> dict:
        return state

    def after_step(self, state: dict, prefix: torch.Tensor, batch: dict, beams: int) -> dict:
        return state
