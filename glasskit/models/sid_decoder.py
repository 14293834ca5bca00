"""The semantic-ID decoder every generative model shares (TIGER, GLASS, DualGR, GEMs): a learned
BOS vector and the target's codes level by level, a stack of decoder layers over the model's
context, one output head per level projected in fp32, teacher forcing for training and
incremental decoding (a self-attention cache per layer) for beam search.

A model subclasses :class:`SidDecoder`, creates in its ``__init__`` (in its own order, which
fixes seeded initialisation) ``emb`` (:class:`SidEmbedding`), ``bos``, ``dec_pos``, ``decoder``
(layers called as ``layer(x, ctx, inspect)``), ``dec_norm``, ``heads``, ``drop`` and the
attributes ``d``, ``levels`` and ``inspect``, writes ``encode`` (its context: the state holding
``mem``, ``kv`` per decoder layer and what its layers read), and overrides only what its paper
changes:

- ``decoder_context``: what every layer reads besides its keys/values (TIGER: the memory's
  mask; GLASS: the retrieved tokens and the gate's switch; DualGR: the routed window or the
  search; GEMs: one mask per stream);
- ``teacher_state`` and ``after_step``: context that follows the first code (the target's in
  training, each beam's generated one at inference);
- ``objective``: the loss over the levels' logits (GEMs and DualGR add their terms).

Shapes: B samples, L levels, N decoder rows (B under teacher forcing, B·beams in beam search,
sample-major), T decoder positions, d width.
"""

from __future__ import annotations

import torch
from torch import nn

from glasskit.models.layers import KVCache, sid_loss


class SidDecoder(nn.Module):
    row_keys: tuple[str, ...] = ()  # per-row state that follows each beam's parent (select)

    # -- what a model writes or changes ------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        raise NotImplementedError

    def decoder_context(self, state: dict, x: torch.Tensor, start: int) -> dict:
        """What every decoder layer reads besides its own keys/values and cache, for x (N, T, d)
        holding positions start..start+T-1."""
        return {"mask": state["mask"]}

    def inspect_record(self, state: dict) -> dict:
        """Extra fields of one decoder pass's inspection record (see glasskit.analysis.trace)."""
        return {}

    def teacher_state(self, state: dict, batch: dict[str, torch.Tensor]) -> dict:
        """The context under teacher forcing, when it depends on the target (GLASS, DualGR)."""
        return state

    def after_step(self, state: dict, prefix: torch.Tensor, batch: dict[str, torch.Tensor],
                   beams: int) -> dict:
        """Called after every decoding step with the kept prefixes (B·beams, l), sample-major."""
        return state

    def objective(self, logits: list[torch.Tensor], batch: dict[str, torch.Tensor],
                  state: dict) -> torch.Tensor:
        """Next-token cross-entropy summed over the levels."""
        return sid_loss(logits, batch["target"])

    # -- shared ------------------------------------------------------------------------------
    def decoder_input(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix (N, l) codes -> decoder input (N, l+1, d): BOS then the prefix tokens."""
        N, n = prefix.shape
        x = self.bos.expand(N, 1, self.d)
        if n:
            x = torch.cat([x, self.emb(prefix)], 1)
        return self.drop(x + self.dec_pos.weight[: n + 1])

    def run_decoder(self, x: torch.Tensor, state: dict, start: int = 0) -> torch.Tensor:
        """Decoder over x (N, T, d) holding positions start..start+T-1 (start > 0 only when
        decoding incrementally with the caches in ``state['cache']``). With ``inspect`` a list,
        each pass appends its layers' records."""
        caches = state.get("cache") or [None] * len(self.decoder)
        ctx = self.decoder_context(state, x, start)
        layers = [] if self.inspect is not None else None
        for layer, kv, cache in zip(self.decoder, state["kv"], caches):
            x = layer(x, {**ctx, "kv": kv, "cache": cache}, layers)
        if layers is not None:
            self.inspect.append({"start": start, "layers": layers, **self.inspect_record(state)})
        return self.dec_norm(x)

    def logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Level ``level``'s head on h (N, d) -> (N, K_l), projected in fp32 (never autocast)."""
        with torch.autocast(h.device.type, enabled=False):
            return self.heads[level](h.float())

    def forward(self, batch: dict[str, torch.Tensor], loss: bool = False):
        """Teacher forcing: logits of every level, [(B, K_l)], or with ``loss`` the model's
        objective (through ``forward`` so that DistributedDataParallel sees it)."""
        state = self.teacher_state(self.encode(batch), batch)
        h = self.run_decoder(self.decoder_input(batch["target"][:, :-1]), state)
        logits = [self.logits(h[:, i], i) for i in range(self.levels)]
        return self.objective(logits, batch, state) if loss else logits

    def step_logits(self, state: dict, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (N, K_l) of the next code after ``prefix`` (N, l), decoding the whole prefix
        (what incremental decoding must equal)."""
        h = self.run_decoder(self.decoder_input(prefix), {**state, "cache": None})
        return self.logits(h[:, -1], prefix.shape[1])

    # -- incremental decoding (beam search) ----------------------------------------------------
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
