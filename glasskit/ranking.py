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

from glasskit.decode import NEG, BeamResult, beam_search
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
        results = [beam_search(model, b, index, beam, seen=seen) for b in branch_batches(model, batch)]
        if len(results) == 1:
            top, top_scores = top_k_items(results[0].items, results[0].scores, k, seen)
            return Ranking(top, top_scores, results[0].trace)
        # several decoding branches (DualGR's long and short windows): merge their candidates,
        # an item keeping its best score, and their beams the same way (merged_trace)
        items = torch.cat([r.items for r in results], 1)
        scores = torch.cat([r.scores for r in results], 1)
        dense = torch.full((items.shape[0], len(index.full_items)), float("-inf"),
                           device=items.device)
        ok = items >= 0
        dense.scatter_reduce_(1, items.clamp_min(0), torch.where(ok, scores, float("-inf")), "amax")
        catalogue = torch.arange(dense.shape[1], device=dense.device).expand_as(dense)
        top, top_scores = top_k_items(catalogue, dense, k, seen)
        return Ranking(top, top_scores, merged_trace(results, beam))
    scores = model.score_items(batch).float()  # (B, n_items)
    items = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    top, top_scores = top_k_items(items, scores, k, seen)
    return Ranking(top, top_scores)


def branch_batches(model, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The batch once per decoding branch (``batch["branch"]`` set), or once for a model
    without several."""
    branches = model.branches if isinstance(model, MultiBranch) else ()
    if len(branches) <= 1:
        return [batch]
    return [{**batch, "branch": b} for b in branches]


def merged_trace(results: list[BeamResult], beam: int) -> list[torch.Tensor]:
    """The beams of several branches merged depth by depth as the ranking merges items: the
    ``beam`` best distinct prefixes over all branches, each keeping its best log-probability,
    best first (-1 rows where fewer exist). What CRP, hierarchical recall and P_i read for a
    model with several branches."""
    out = []
    for d in range(len(results[0].trace)):
        prefix = torch.cat([r.trace[d] for r in results], 1)  # (B, C, d+1)
        score = torch.cat([r.trace_scores[d] for r in results], 1)  # (B, C)
        score = torch.where(prefix[..., 0] >= 0, score, NEG)
        C = prefix.shape[1]
        same = (prefix[:, :, None, :] == prefix[:, None, :, :]).all(-1)  # (B, C, C)
        pos = torch.arange(C, device=prefix.device)
        ahead = (score[:, None, :] > score[:, :, None]) | (
            (score[:, None, :] == score[:, :, None]) & (pos[None, None, :] < pos[None, :, None]))
        score = score.masked_fill((same & ahead).any(-1), NEG)  # a copy with a better score exists
        score, idx = score.topk(min(beam, C), dim=1)
        kept = prefix.gather(1, idx[..., None].expand(-1, -1, d + 1))
        out.append(torch.where(torch.isfinite(score)[..., None], kept, -1))
    return out


@torch.no_grad()
def greedy_codes(model, batch: dict[str, torch.Tensor], index: PrefixIndex) -> torch.Tensor:
    """(B, L) the codes top-1 decoding picks level by level among valid prefixes (the P_i
    chain of GLASS §5.3): the same constrained search at beam 1; with several branches, the
    branch whose path scores best (the merged ranking's first item)."""
    results = [beam_search(model, b, index, 1) for b in branch_batches(model, batch)]
    return merged_trace(results, 1)[-1][:, 0]


@torch.no_grad()
def teacher_forced_codes(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, L) each level's most probable code under teacher forcing (acc_i). With several
    branches the target never picks the branch: each code keeps its best probability over the
    branches, as the ranking merges them."""
    logp = [[lg.float().log_softmax(-1) for lg in model(b)] for b in branch_batches(model, batch)]
    return torch.stack([torch.stack(level).amax(0).argmax(-1) for level in zip(*logp)], 1)


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
