"""SASRec (Kang & McAuley, 2018): causal self-attention over item ids, the ID baseline of
GLASS Table 3.

The input is the last ``max_len`` items (as the SID models read their short window); item and
position embeddings, pre-norm blocks with a causal mask, a final LayerNorm; the score of item i
is the dot product of the last hidden state with i's (input) embedding.

Training (``train_on``): ``all`` learns from every position of each user's training prefix, as
SASRec does: the prefix is tiled into windows of ``max_len`` ending at the last training target
(data.window_samples), each position predicting the next item; ``targets`` learns from the
same (user, target) samples as the SID models. Loss: ``ce``,
full-softmax cross-entropy over the catalogue; ``bce``, SASRec's binary cross-entropy against
``negatives`` uniformly sampled items per positive.

Shapes: B batch, S max_len, d width, V catalogue size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glasskit.errors import ConfigError
from glasskit.models.layers import Dropout, EncoderLayer


@dataclass
class SasrecConfig:
    layers: int = 2
    max_len: int | None = None  # items read; None: data.short_len (the SID models' window)
    train_on: str = "all"  # "all": every position of each training prefix; "targets"
    loss: str = "ce"  # "ce": full softmax; "bce": sampled negatives
    negatives: int = 1  # per positive, with loss "bce"

    def validate(self) -> None:
        if not isinstance(self.layers, int) or self.layers < 1:
            raise ConfigError(f"model.layers must be a positive integer, got {self.layers!r}")
        if self.max_len is not None and (not isinstance(self.max_len, int) or self.max_len < 1):
            raise ConfigError(f"model.max_len must be a positive integer or null, got {self.max_len!r}")
        if self.train_on not in ("all", "targets"):
            raise ConfigError(f"model.train_on must be all or targets, got {self.train_on!r}")
        if self.loss not in ("ce", "bce"):
            raise ConfigError(f"model.loss must be ce or bce, got {self.loss!r}")
        if not isinstance(self.negatives, int) or self.negatives < 1:
            raise ConfigError(f"model.negatives must be a positive integer, got {self.negatives!r}")


# Kang & McAuley (2018) §IV-C: d 50, 2 blocks, 1 head, point-wise FFN of the same width,
# dropout 0.2 (ML-1M; 0.5 on the sparse Amazon sets), 50 items (200 on ML-1M), Adam lr 1e-3,
# batch 128
SASREC_PAPER: dict = {"model.d_model": 50, "model.heads": 1, "model.head_dim": 50, "model.ff": 50,
                      "model.layers": 2, "model.dropout": 0.2, "model.max_len": 50,
                      "train.lr": 1e-3, "train.batch_size": 128}


class SASRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, d: int = 64, heads: int = 2, head_dim: int = 32,
                 ff: int = 256, layers: int = 2, dropout: float = 0.1, attn_dropout: float = 0.0,
                 train_on: str = "all", loss: str = "ce", negatives: int = 1):
        super().__init__()
        self.n_items, self.max_len, self.d = n_items, max_len, d
        self.train_on, self.loss_kind, self.negatives = train_on, loss, negatives
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)  # item i is row i + 1
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(EncoderLayer(d, heads, head_dim, ff, dropout, attn_dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.drop = Dropout(dropout)
        nn.init.normal_(self.item.weight, std=d ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    @classmethod
    def needs(cls, cfg) -> set[str]:
        return {"items"}

    @classmethod
    def window(cls, cfg) -> int:
        return cfg.model.max_len or cfg.data.short_len

    @classmethod
    def training_windows(cls, cfg) -> int | None:
        """``train_on: all``: windows tiling every training prefix; else the shared targets."""
        return cls.window(cfg) if cfg.model.train_on == "all" else None

    @classmethod
    def from_config(cls, cfg, sizes: list[int], n_items: int, inputs: dict) -> SASRec:
        m = cfg.model
        return cls(n_items, cls.window(cfg), m.d_model, m.heads, m.head_dim, m.ff, m.layers,
                   m.dropout, m.attn_dropout, m.train_on, m.loss, m.negatives)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, S) item indices, -1 = padding (left) -> hidden states (B, S, d)."""
        B, S = seq.shape
        x = self.item(seq + 1) * self.d ** 0.5 + self.pos.weight[self.max_len - S:]
        pad = seq < 0
        causal = torch.ones(S, S, dtype=torch.bool, device=seq.device).tril()
        mask = causal[None, None] & ~pad[:, None, None, :]  # (B, 1, S, S), built once
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (N, d) -> (N, V) scores of every item, in fp32 (never autocast)."""
        with torch.autocast(h.device.type, enabled=False):
            return h.float() @ self.item.weight[1:].float().T

    def forward(self, batch: dict[str, torch.Tensor], loss: bool = False):
        h = self.encode(batch["seq"])
        if not loss:
            return h
        if self.train_on == "all":
            targets = batch["seq_targets"]
        else:  # the sample's own target, at the last position
            targets = torch.full_like(batch["seq"], -1)
            targets[:, -1] = batch["target_item"]
        sel = targets >= 0
        hs, y = h[sel], targets[sel]  # (N, d), (N,)
        if self.loss_kind == "ce":
            return F.cross_entropy(self.item_logits(hs), y)
        neg = torch.randint(0, self.n_items - 1, (len(y), self.negatives), device=y.device)
        neg = neg + (neg >= y[:, None]).long()  # uniform over the other items
        with torch.autocast(hs.device.type, enabled=False):
            hs = hs.float()
            pos = (hs * self.item(y + 1).float()).sum(-1)
            negs = torch.einsum("nd,nkd->nk", hs, self.item(neg + 1).float())
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs), reduction="sum")
                / len(y))

    def score_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, V) fp32 scores of every catalogue item for the next position."""
        return self.item_logits(self.encode(batch["seq"])[:, -1])
