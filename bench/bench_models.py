"""Model-side benchmarks, measured side by side in one run:

1. SID-Tier features and the per-sample retrieval index (history sorted by first code) for
   long histories of 1k, 10k and 100k items: time and peak memory per sample; the ratios
   (per history item, relative to 1k) show linear growth.
2. Training throughput (samples/s) of TIGER and GLASS, and inference ms per user at beam 20,
   GLASS vs TIGER as a ratio, on the quick profile's synthetic data (CPU here, or the GPU).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import measure, table  # noqa: E402

import glasskit as gk  # noqa: E402
from glasskit.batching import Batcher  # noqa: E402
from glasskit.data import prepare  # noqa: E402
from glasskit.device import resolve_device  # noqa: E402
from glasskit.models.layers import sid_loss  # noqa: E402
from glasskit.pipeline import model_and_batcher, tokenize_dataset  # noqa: E402
from glasskit.ranking import rank  # noqa: E402
from glasskit.tokenize import cosine_table, prototypes  # noqa: E402
from glasskit.tokenize.sid_tier import sid_tier_counts  # noqa: E402


def long_history_precompute(histories: tuple[int, ...] = (1_000, 10_000, 100_000),
                            n: int = 16) -> None:
    """SID-Tier and retrieval-index cost for ``n`` samples per long-history length."""
    rows = []
    for hist in histories:
        cfg = gk.profile("quick", **{
            "data.dataset": "synthetic", "data.short_len": 20, "data.long_max": hist,
            "synthetic.users": n, "synthetic.min_len": hist, "synthetic.max_len": hist,
            "tokenizer.method": "rqkmeans"})  # long history of a test sample: hist - 21 items
        ds = prepare(cfg)
        tbl = tokenize_dataset(ds)
        emb = ds.embeddings()
        cos = cosine_table(emb, prototypes(emb, tbl.first, tbl.sizes[0]))
        b = Batcher(ds, tbl, long=True)
        s = b.samples("test")
        from glasskit.data import window_bounds

        _, _, ls, le = window_bounds(ds.seqs, s, cfg.data.short_len, cfg.data.long_max)
        idx = np.arange(n)
        t_tier, m_tier = measure(lambda cos=cos, items=ds.seqs.items, ls=ls, le=le:
                                 sid_tier_counts(cos, items, ls, le, 10))
        t_idx, m_idx = measure(lambda b=b, idx=idx: b._long(b.samples("test", idx)))
        rows.append({"history": hist, "tier_ms_per_sample": 1e3 * t_tier / n,
                     "tier_peak_MiB": m_tier, "index_ms_per_sample": 1e3 * t_idx / n,
                     "index_peak_MiB": m_idx,
                     "tier_us_per_item": 1e6 * t_tier / float((le - ls).sum())})
    print(f"SID-Tier (K0={tbl.sizes[0]}, N=10) and retrieval index, {n} samples per history length")
    print(table(rows, "tier_us_per_item"))
    base = rows[0]
    print("index time per item relative to 1k:",
          [round(r["index_ms_per_sample"] / r["history"] / (base["index_ms_per_sample"]
                                                             / base["history"]), 2) for r in rows])


def speed(profile: str = "quick", steps: int = 6) -> None:
    """Training samples/s over ``steps`` batches (the first warms up) and beam-20 inference."""
    device = resolve_device("auto")
    base = gk.profile(profile, **{"data.dataset": "synthetic", "train.device": device.type})
    rows = []
    for name, cfg in (("tiger", base), ("glass", gk.apply_variant(base, "sidtier+shs"))):
        ds = prepare(cfg)
        tbl = tokenize_dataset(ds)
        torch.manual_seed(0)
        model, batcher = model_and_batcher(cfg, ds, tbl, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = [batcher.batch("train", np.arange(i, i + 256)) for i in range(0, 256 * steps, 256)]
        model.train()
        for i, batch in enumerate(batches):
            if i == 1:  # the first step warms up
                t0 = time.perf_counter()
            loss = sid_loss(model(batch), batch["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_sps = 256 * (len(batches) - 1) / (time.perf_counter() - t0)
        model.eval()
        index = tbl.index(device)
        users = np.arange(min(256, len(ds.splits["test"])))
        batch = batcher.batch("test", users)
        rank(model, "sid", batch, index, 20, 20)
        sec, _ = measure(lambda m=model, batch=batch, index=index:
                         rank(m, "sid", batch, index, 20, 20), repeat=3)
        rows.append({"model": name, "train_samples_per_s": train_sps,
                     "infer_ms_per_user": 1e3 * sec / len(users)})
    print(f"training and beam-20 inference, {profile} profile on synthetic data, device={device}")
    print(table(rows, "infer_ms_per_user"))


if __name__ == "__main__":
    long_history_precompute()
    speed()
