"""What a trained model attends to while it ranks: beam search with inspection, reduced batch
by batch to tables (the raw maps of a whole split would not fit in memory).

``decode_trace`` gives, for every decoding step after the first (the steps semantic hard search
takes part in), per layer and per beam that retrieved something: the level being predicted,
the retrieved length, the gate value (mean over its d entries) and the norms of each stream's
contribution to the context, (1-g)·Z_short and g·Z_ret (GLASS eq. 13). It also gives the
recency profile: the cross-attention mass on each input item by its age (positions before the
target: the most recent input has age 1), per stream and layer, averaged over beams.

``user_view`` shows one sample: its short window, and for each beam's generated first code the
retrieved items with the attention each received and the gate.

Levels are 0-based (level 1 is the second SID token, the first one hard search informs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from glasskit.batching import Batcher
from glasskit.decode import beam_search
from glasskit.tokenize import PrefixIndex

_ROW_KEYS = ("rows", "gate", "attn_ret", "short_norm", "ret_norm")  # per retrieving row


@dataclass
class DecodeTrace:
    gates: pd.DataFrame  # sample, level, layer, ret_len, gate, short_norm, ret_norm
    recency: pd.DataFrame  # stream, layer, age, mass (mean attention per beam row)
    rows: pd.DataFrame  # level, layer, rows (beam rows decoded), retrieving (rows that retrieved)


def _short_item_mass(attn: torch.Tensor, S: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Short-stream attention (N, h, 1, S·L [+1 tier]) -> mass per window slot (N, S), oldest
    slot first, and the mass on the SID-Tier token (N,) (zeros without one)."""
    w = attn.float().mean(1)[:, 0]  # (N, tokens)
    items = w[:, : S * L].reshape(len(w), S, L).sum(-1)
    tier = w[:, S * L] if w.shape[1] > S * L else torch.zeros(len(w))
    return items.cpu().numpy(), tier.cpu().numpy()


@contextlib.contextmanager
def inspecting(model, batcher: Batcher) -> Iterator[list]:
    """The model in eval mode recording every decoder pass into the yielded list
    (``model.inspect``), the batcher giving item-level detail; both restored however the block
    ends."""
    was_training, detail = model.training, batcher.detail
    model.eval()
    batcher.detail = True
    model.inspect = []
    try:
        yield model.inspect
    finally:
        model.inspect = None
        batcher.detail = detail
        model.train(was_training)


@torch.no_grad()
def decode_trace(model, batcher: Batcher, index: PrefixIndex, split: str = "test",
                 beam: int = 20, samples: np.ndarray | None = None,
                 batch_size: int = 128) -> DecodeTrace:
    """Trace beam search over ``samples`` of ``split`` (all of them by default)."""
    S, L = batcher.ds.short_len, batcher.table.levels
    n = len(batcher.ds.splits[split])
    samples = np.arange(n) if samples is None else np.asarray(samples)
    gates, counts = [], []
    mass: dict[tuple[str, int, int], float] = {}
    rows_seen: dict[tuple[str, int], int] = {}
    with inspecting(model, batcher) as records:
        for start in range(0, len(samples), batch_size):
            idx = samples[start:start + batch_size]
            batch = batcher.batch(split, idx)
            records.clear()
            res = beam_search(model, batch, index, beam)
            B = len(idx)
            for rec in records:
                level = rec["start"]
                # rows of beams that exist (a level with fewer codes than beams pads with dead
                # beams, whose scores are -inf; they are left out)
                alive = (np.ones(B, bool) if level == 0
                         else res.trace[level - 1][..., 0].reshape(-1).cpu().numpy() >= 0)
                for layer, lay in enumerate(rec["layers"]):
                    N = lay["attn_short"].shape[0]
                    sample = np.arange(N) // (N // B)
                    items, tier = _short_item_mass(lay["attn_short"], S, L)
                    items, tier = items[alive], tier[alive]
                    N = int(alive.sum())
                    ages = np.arange(S, 0, -1)
                    key = ("short", layer)
                    rows_seen[key] = rows_seen.get(key, 0) + N
                    for a, m in zip(ages, items.sum(0)):
                        mass[("short", layer, int(a))] = mass.get(("short", layer, int(a)), 0.0) + m
                    if tier.any():
                        mass[("tier", layer, 0)] = mass.get(("tier", layer, 0), 0.0) + float(tier.sum())
                    n_ret = 0
                    if "gate" in lay:
                        keep = alive[lay["rows"].cpu().numpy()]
                        lay = {k: v[torch.as_tensor(keep)] if k in _ROW_KEYS else v
                               for k, v in lay.items()}
                        r = lay["rows"].cpu().numpy()
                        n_ret = len(r)
                        gates.append(pd.DataFrame({
                            "sample": idx[sample[r]], "level": level, "layer": layer,
                            "ret_len": rec["ret_len"][r].cpu().numpy(),
                            "gate": lay["gate"].float().mean(-1)[:, -1].cpu().numpy(),
                            "short_norm": lay["short_norm"][:, -1].float().cpu().numpy(),
                            "ret_norm": lay["ret_norm"][:, -1].float().cpu().numpy()}))
                        _retrieval_mass(mass, rows_seen, layer, lay, rec, batch, r, L)
                    counts.append({"level": level, "layer": layer, "rows": N, "retrieving": n_ret})
    recency = pd.DataFrame([{"stream": s, "layer": layer, "age": a,
                             "mass": m / rows_seen[("short" if s == "tier" else s, layer)]}
                            for (s, layer, a), m in sorted(mass.items())])
    rows = pd.DataFrame(counts).groupby(["level", "layer"], as_index=False).sum()
    gate_df = pd.concat(gates, ignore_index=True) if gates else pd.DataFrame(
        columns=["sample", "level", "layer", "ret_len", "gate", "short_norm", "ret_norm"])
    return DecodeTrace(gate_df, recency, rows)


def _retrieval_mass(mass: dict, rows_seen: dict, layer: int, lay: dict, rec: dict,
                    batch: dict, r: np.ndarray, L: int) -> None:
    """Add the retrieval stream's attention per retrieved item, by the item's age."""
    w = lay["attn_ret"].float().mean(1)[:, -1]  # (n, R·L)
    per_item = w.reshape(len(w), -1, L).sum(-1).cpu().numpy()  # (n, R)
    pos = rec["ret_pos"][r].cpu().numpy()  # (n, R), -1 = padding
    row = rec["ret_row"][r].cpu().numpy()
    age = batch["long_age"].cpu().numpy()[row[:, None], np.maximum(pos, 0)]
    ok = pos >= 0
    rows_seen[("retrieved", layer)] = rows_seen.get(("retrieved", layer), 0) + len(r)
    for a, m in zip(age[ok], per_item[ok]):
        key = ("retrieved", layer, int(a))
        mass[key] = mass.get(key, 0.0) + float(m)


@torch.no_grad()
def user_view(model, batcher: Batcher, index: PrefixIndex, sample: int, texts: list[str],
              split: str = "test", beam: int = 20, level: int = 1) -> dict[str, pd.DataFrame]:
    """One sample under the microscope: its short window (oldest first), and for each beam at
    the step predicting ``level`` (>= 1) its generated first code, the gate (mean over layers
    and entries) and the retrieved items with the attention each received (mean over heads and
    layers)."""
    with inspecting(model, batcher) as records:
        batch = batcher.batch(split, np.array([sample]))
        res = beam_search(model, batch, index, beam)
        recs = [rec for rec in records if rec["start"] == level]
    short = batch["short_items"][0].cpu().numpy()
    target = int(batch["target_item"][0])
    window = pd.DataFrame({"age": np.arange(len(short), 0, -1), "item": short})
    window = window[window["item"] >= 0].assign(text=lambda d: [texts[i] for i in d["item"]])
    beams = []
    retrieved = []
    if recs and "ret_len" in recs[0]:
        rec = recs[0]
        first = res.trace[level - 1][0, :, 0].cpu().numpy()  # the rows' first codes, in order
        ret_len = rec["ret_len"].cpu().numpy()
        L = batcher.table.levels
        gate = np.zeros(len(ret_len))
        attn: dict[int, np.ndarray] = {}
        for lay in rec["layers"]:
            if "gate" not in lay:
                continue
            r = lay["rows"].cpu().numpy()
            gate[r] += lay["gate"].float().mean(-1)[:, -1].cpu().numpy() / len(rec["layers"])
            w = lay["attn_ret"].float().mean(1)[:, -1].reshape(len(r), -1, L).sum(-1).cpu().numpy()
            for i, row in enumerate(r):
                attn[row] = attn.get(row, 0) + w[i] / len(rec["layers"])
        items = batch["long_items"][0].cpu().numpy()
        ages = batch["long_age"][0].cpu().numpy()
        pos = rec["ret_pos"].cpu().numpy()
        for b in range(len(ret_len)):
            if b >= len(first) or first[b] < 0:  # a dead beam (fewer codes than beams)
                continue
            beams.append({"beam": b, "first_code": int(first[b]) if b < len(first) else -1,
                          "retrieved": int(ret_len[b]), "gate": float(gate[b])})
            for j, p in enumerate(pos[b]):
                if p < 0:
                    continue
                it = int(items[p])
                retrieved.append({"beam": b, "first_code": int(first[b]), "item": it,
                                  "age": int(ages[p]), "attention": float(attn[b][j]) if b in attn else 0.0,
                                  "text": texts[it], "is_target": it == target})
    return {"window": window.reset_index(drop=True), "beams": pd.DataFrame(beams),
            "retrieved": pd.DataFrame(retrieved), "target": pd.DataFrame(
                {"item": [target], "text": [texts[target]]})}


@torch.no_grad()
def gems_stream_shares(model, batcher, split: str = "test", samples: np.ndarray | None = None,
                       batch_size: int = 256) -> pd.DataFrame:
    """What share of a GEMs decoder's input each stream gives it, per decoder layer and SID
    level (0-based, the level predicted), under teacher forcing on ``split``: one row per
    (layer, level, stream) with the mean ``share`` over samples and ``present``, the fraction
    of samples whose history has the stream at all (an absent stream's share is 0).

    The measure follows the fusion (gems.md §4.5): with a cross-attention per stream, sum (d)
    and gate (c), a stream's share is the norm of its increment to the residual, weighted by
    its gate in (c), over the sum of all of them; with one cross-attention over every stream's
    memory (a, b), it is the attention mass (mean over heads) on that stream's positions."""
    from glasskit.models.gems import STREAMS

    n = len(batcher.ds.splits[split])
    samples = np.arange(n) if samples is None else np.asarray(samples)
    sums: dict[tuple[int, int, str], float] = {}
    present: dict[str, float] = {}
    with inspecting(model, batcher) as records:
        for start in range(0, len(samples), batch_size):
            batch = batcher.batch(split, samples[start:start + batch_size])
            records.clear()
            state = model.encode(batch)  # teacher forcing, as GEMs' forward does
            model.run_decoder(model.decoder_input(batch["target"][:, :-1]), state)
            for s in STREAMS:
                has = state["has"].get(s)
                if has is None and "all" in state["has"] and s in model.streams:
                    seg = state["segments"]["all"]
                    pad = state["mems"]["all"][1]
                    has = (~pad[:, seg == STREAMS.index(s)]).any(1)
                present[s] = present.get(s, 0.0) + (float(has.sum()) if has is not None else 0.0)
            for layer, rec in enumerate(records[-1]["layers"]):
                if "mass" in rec:  # (N, T, 3)
                    share = rec["mass"].float()
                else:
                    names = [s for s in STREAMS if s in rec]
                    contrib = torch.stack([rec[s].float() for s in names], -1)  # (N, T, S)
                    if "gate" in rec:
                        contrib = contrib * rec["gate"].float()
                    part = contrib / contrib.sum(-1, keepdim=True).clamp_min(1e-12)
                    share = torch.zeros(*part.shape[:2], len(STREAMS))
                    share[..., [STREAMS.index(s) for s in names]] = part
                totals = share.sum(0)  # (T, 3)
                for level in range(totals.shape[0]):
                    for i, s in enumerate(STREAMS):
                        key = (layer, level, s)
                        sums[key] = sums.get(key, 0.0) + float(totals[level, i])
    total = len(samples)
    return pd.DataFrame([{"layer": layer, "level": level, "stream": s, "share": v / total,
                          "present": present[s] / total}
                         for (layer, level, s), v in sorted(sums.items())])


# -- figures ----------------------------------------------------------------------------------
