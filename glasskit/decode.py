"""Constrained beam search over semantic IDs, batched over users.

Only prefixes that exist in the SID table survive a step (the prefix index gives the valid
next codes). Decoding is incremental: each step feeds the models only the newest position
(``model.decode_step``), and after the top-B cut every beam's caches and per-row state follow
its parent (``model.select``). A model may add per-beam context after a step through
``model.after_step`` (GLASS retrieves with each beam's own generated first code there).

History masking: with ``seen`` (B, n_items) given, at the last level the SIDs of items the user
already saw are removed before the top-B cut, so K valid unseen items remain whenever the
catalogue allows. The kept beams' items are the candidates that glasskit.ranking orders with
every other model's (``top_k_items``: seen items removed, equal scores by item index; items
sharing one SID under ``collisions="keep"`` tie).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glasskit.tokenize import PrefixIndex

NEG = float("-inf")


@dataclass
class BeamResult:
    items: torch.Tensor  # (B, beam·G) the kept beams' items, unordered candidates; -1 = none
    scores: torch.Tensor  # (B, beam·G) log-probability of each candidate's SID
    trace: list[torch.Tensor]  # trace[d]: (B, beam, d+1) prefixes kept at depth d+1, -1 = empty
    trace_scores: list[torch.Tensor]  # trace_scores[d]: (B, beam) their log-probabilities, best first


def _seen_at_last_level(index: PrefixIndex, prefix: torch.Tensor, seen: torch.Tensor,
                        beam: int) -> torch.Tensor:
    """(B·beam, K_last) True where prefix + code is the SID of an item the user has seen."""
    n, k_last = prefix.shape[0], index.sizes[prefix.shape[1]]
    codes = torch.arange(k_last, device=prefix.device)
    full = torch.cat([prefix[:, None, :].expand(n, k_last, -1), codes[None, :, None].expand(n, -1, 1)], 2)
    items = index.items(full.reshape(n * k_last, -1)).view(n, k_last)
    user = torch.arange(n, device=prefix.device) // beam
    hit = seen[user[:, None], items.clamp_min(0)]
    if index.max_group > 1:  # kept collisions: mask a SID only when all of its items are seen
        return torch.zeros_like(hit)
    return hit & (items >= 0)


@torch.no_grad()
def beam_search(model, batch: dict[str, torch.Tensor], index: PrefixIndex, beam: int,
                seen: torch.Tensor | None = None) -> BeamResult:
    state = model.start_decoding(model.encode(batch))
    B = state["mem"].shape[0]
    levels = len(index.sizes)
    dev = state["mem"].device
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)  # (B, beams, l)
    scores = torch.zeros(B, 1, device=dev)
    trace: list[torch.Tensor] = []
    trace_scores: list[torch.Tensor] = []
    for level in range(levels):
        n_beams = prefix.shape[1]
        flat = prefix.reshape(B * n_beams, level)
        logp = model.decode_step(state, flat).float().log_softmax(-1)  # (B·n_beams, K_l)
        valid = index.next_mask(flat)
        if seen is not None and level == levels - 1:
            valid = valid & ~_seen_at_last_level(index, flat, seen, n_beams)
        logp = logp.masked_fill(~valid, NEG)
        k_l = logp.shape[1]
        cand = (scores.reshape(-1, 1) + logp).view(B, n_beams * k_l)
        scores, idx = cand.topk(min(beam, cand.shape[1]), dim=1)  # (B, beam)
        if scores.shape[1] < beam:  # fewer codes than beams: pad with empty beams
            fill = beam - scores.shape[1]
            scores = torch.nn.functional.pad(scores, (0, fill), value=NEG)
            idx = torch.nn.functional.pad(idx, (0, fill), value=0)
        parent, code = idx // k_l, idx % k_l
        prefix = torch.cat([prefix.gather(1, parent[..., None].expand(-1, -1, level)),
                            code[..., None]], 2)
        trace.append(torch.where(torch.isfinite(scores)[..., None], prefix, -1))
        trace_scores.append(scores)
        if level < levels - 1:
            rows = (torch.arange(B, device=dev)[:, None] * n_beams + parent).reshape(-1)
            state = model.select(state, rows)
            state = model.after_step(state, prefix.reshape(-1, level + 1), batch, prefix.shape[1])
    groups = index.expand(prefix)  # (B, beam, G)
    G = groups.shape[-1]
    item_scores = scores[..., None].expand(-1, -1, G).reshape(B, -1)
    return BeamResult(groups.reshape(B, -1), item_scores, trace, trace_scores)
