"""One ranking path for every model, from candidates to the ranked-item arrays the metrics read.

SID models (``kind == "sid"``) rank by constrained beam search over semantic IDs (its candidates
are the items of the kept beams, scored by their SID's log-probability); ID models score every
catalogue item. Both hand their candidates to :func:`top_k_items`, which applies the same
history masking (an item the user saw before the target is removed) and the same tie-break:
equal scores are ordered by item index, lower first, so a ranking never depends on the order
candidates arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glasskit.decode import NEG, beam_search
from glasskit.errors import GlasskitError
from glasskit.models.interface import MultiBranch
from glasskit.tokenize import PrefixIndex


@dataclass
class Ranking:
    items: torch.Tensor  # (B, K) item indices, best first; -1 where fewer than K are valid
    scores: torch.Tensor  # (B, K) the model's score of each, -inf where empty
    trace: list[torch.Tensor] | None = None  # SID models: prefixes kept at each depth (CRP)


@torch.no_grad()
def rank(model, kind: str, batch: dict[str, torch.Tensor], index: PrefixIndex | None, beam: int,
         k: int, seen: torch.Tensor | None = None) -> Ranking:
    """The top ``k`` items of every sample of ``batch``: beam search for SID models, the whole
    catalogue for ID models (``model.score_items``, fp32); both through ``top_k_items``."""
    if kind == "sid" and beam < k:
        raise GlasskitError(f"beam ({beam}) must be at least the largest K ({k})")
    if kind == "sid":
        branches = model.branches if isinstance(model, MultiBranch) else ()
        if len(branches) <= 1:
            res = beam_search(model, batch, index, beam, seen=seen)
            top, top_scores = top_k_items(res.items, res.scores, k, seen)
            return Ranking(top, top_scores, res.trace)
        # several decoding branches (DualGR's long and short windows): merge their candidates,
        # an item keeping its best score; CRP is read from the first branch
        results = [beam_search(model, {**batch, "branch": b}, index, beam, seen=seen)
                   for b in branches]
        items = torch.cat([r.items for r in results], 1)
        scores = torch.cat([r.scores for r in results], 1)
        dense = torch.full((items.shape[0], len(index.full_items)), float("-inf"),
                           device=items.device)
        ok = items >= 0
        dense.scatter_reduce_(1, items.clamp_min(0), torch.where(ok, scores, float("-inf")), "amax")
        catalogue = torch.arange(dense.shape[1], device=dense.device).expand_as(dense)
        top, top_scores = top_k_items(catalogue, dense, k, seen)
        return Ranking(top, top_scores, results[0].trace)
    scores = model.score_items(batch).float()  # (B, n_items)
    items = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    top, top_scores = top_k_items(items, scores, k, seen)
    return Ranking(top, top_scores)


@torch.no_grad()
def greedy_codes(model, batch: dict[str, torch.Tensor], index: PrefixIndex) -> torch.Tensor:
    """(B, L) the codes top-1 decoding picks level by level among valid prefixes (the P_i
    chain of GLASS §5.3): the same constrained search at beam 1."""
    return beam_search(model, batch, index, 1).trace[-1][:, 0]


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
