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


@torch.no_grad()
def decode_trace(model, batcher: Batcher, index: PrefixIndex, split: str = "test",
                 beam: int = 20, samples: np.ndarray | None = None,
                 batch_size: int = 128) -> DecodeTrace:
    """Trace beam search over ``samples`` of ``split`` (all of them by default)."""
    was_training, detail = model.training, batcher.detail
    model.eval()
    batcher.detail = True
    S, L = batcher.ds.short_len, batcher.table.levels
    n = len(batcher.ds.splits[split])
    samples = np.arange(n) if samples is None else np.asarray(samples)
    gates, counts = [], []
    mass: dict[tuple[str, int, int], float] = {}
    rows_seen: dict[tuple[str, int], int] = {}
    try:
        for start in range(0, len(samples), batch_size):
            idx = samples[start:start + batch_size]
            batch = batcher.batch(split, idx)
            model.inspect = []
            res = beam_search(model, batch, index, beam, min(beam, 20))
            B = len(idx)
            for rec in model.inspect:
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
    finally:
        model.inspect = None
        batcher.detail = detail
        model.train(was_training)
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
    was_training, detail = model.training, batcher.detail
    model.eval()
    batcher.detail = True
    try:
        batch = batcher.batch(split, np.array([sample]))
        model.inspect = []
        res = beam_search(model, batch, index, beam, min(beam, 20))
        recs = [rec for rec in model.inspect if rec["start"] == level]
    finally:
        model.inspect = None
        batcher.detail = detail
        model.train(was_training)
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
