"""Constrained beam search over semantic IDs, batched over users.

Only prefixes that exist in the SID table survive a step (the prefix index gives the valid
next codes). Decoding is incremental: each step feeds the models only the newest position
(``model.decode_step``), and after the top-B cut every beam's caches and per-row state follow
its parent (``model.select``). A model may add per-beam context after a step through
``model.after_step`` (GLASS retrieves with each beam's own generated first code there).

History masking: with ``seen`` (B, n_items) given, at the last level the SIDs of items the user
already saw are removed before the top-B cut, so K valid unseen items remain whenever the
catalogue allows. The kept beams' items then go through :func:`top_k_items`, the ranking step
every model shares (glasskit.ranking): seen items removed, equal scores ordered by item index
(items sharing one SID under ``collisions="keep"`` tie, and are listed in item order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glasskit.errors import GlasskitError
from glasskit.tokenize import PrefixIndex

NEG = float("-inf")


@dataclass
class BeamResult:
    items: torch.Tensor  # (B, K) item indices, best first; -1 where fewer than K are valid
    scores: torch.Tensor  # (B, K) log-probability of each item's SID
    trace: list[torch.Tensor]  # trace[d]: (B, beam, d+1) prefixes kept at depth d+1, -1 = empty


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
def beam_search(model, batch: dict[str, torch.Tensor], index: PrefixIndex, beam: int, k: int,
                seen: torch.Tensor | None = None) -> BeamResult:
    if beam < k:
        raise GlasskitError(f"beam ({beam}) must be at least the largest K ({k})")
    state = model.start_decoding(model.encode(batch))
    B = state["mem"].shape[0]
    levels = len(index.sizes)
    dev = state["mem"].device
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)  # (B, beams, l)
    scores = torch.zeros(B, 1, device=dev)
    trace: list[torch.Tensor] = []
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
        if level < levels - 1:
            rows = (torch.arange(B, device=dev)[:, None] * n_beams + parent).reshape(-1)
            state = model.select(state, rows)
            state = model.after_step(state, prefix.reshape(-1, level + 1), batch, prefix.shape[1])
    groups = index.expand(prefix)  # (B, beam, G)
    G = groups.shape[-1]
    items = groups.reshape(B, -1)
    item_scores = scores[..., None].expand(-1, -1, G).reshape(B, -1)
    items, out_scores = top_k_items(items, item_scores, k, seen)
    return BeamResult(items, out_scores, trace)


def top_k_items(items: torch.Tensor, scores: torch.Tensor, k: int,
                seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates ``items`` (B, C) (-1 = none) with ``scores`` (B, C) -> the best ``k`` (B, k):
    seen items (``seen`` (B, n_items) True) and invalid candidates dropped, higher score first,
    equal scores by lower item index; padded with -1 / -inf when fewer than k remain. Every
    model's ranking ends here."""
    ok = (items >= 0) & torch.isfinite(scores)
    if seen is not None:
        ok &= ~seen.gather(1, items.clamp_min(0))
    s = torch.where(ok, scores.float(), NEG)
    # tie-break by item index: order by index first, then stably by score
    by_item = torch.argsort(torch.where(ok, items, torch.iinfo(items.dtype).max), dim=1, stable=True)
    s, items, ok = s.gather(1, by_item), items.gather(1, by_item), ok.gather(1, by_item)
    order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
    out_items = torch.where(ok.gather(1, order), items.gather(1, order), -1)
    out_scores = torch.where(out_items >= 0, s.gather(1, order), NEG)
    if out_items.shape[1] < k:
        pad = k - out_items.shape[1]
        out_items = torch.nn.functional.pad(out_items, (0, pad), value=-1)
        out_scores = torch.nn.functional.pad(out_scores, (0, pad), value=NEG)
    return out_items, out_scores
