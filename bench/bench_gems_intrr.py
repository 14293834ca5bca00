"""GEMs and IntRR against their references, side by side in one run (CPU here; the GPU when
there is one). Every model or configuration runs in its own process so that its peak resident
memory (ru_maxrss above what loading took) is its own.

1. GEMs mid-term attention (gems.md Table 5): one indexer block's training step at stage 3
   (indexer top-k sparse attention plus the indexer's KL) against brute-force full attention,
   for mid-term streams of 128 to 4096 items: time and peak memory, as ratios.
   Quality: with trained GEMs runs (``--gems RUN``, default ``runs/cmp/ml-100k/gems-s0``), the
   share of the full attention's probability mass that the indexer's top-k keys hold on the
   test users, and the test metrics of the ``gems`` and ``gems full-mid`` runs given
   (``--full-mid RUN``).
2. IntRR vs TIGER (intrr.md Tables 2-3) on the quick profile (ml-100k): training samples/s,
   peak memory of training, inference ms per user at beams 10, 15, 20, 25, 30, 50.

    python bench/bench_gems_intrr.py [--gems RUN] [--full-mid RUN]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

BEAMS = (10, 15, 20, 25, 30, 50)
LENGTHS = (128, 512, 1024, 4096)
ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def block_worker(length: int, sparse: bool) -> dict:
    import torch

    from glasskit.models.gems import IndexerBlock

    torch.manual_seed(0)
    batch, top_k = 16, 32
    block = IndexerBlock(64, 4, 16, 128, 0.0, indexer_heads=1, kl_queries=16)
    x = torch.randn(batch, length, 64)
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[: batch // 2, : length // 4] = True  # half the samples have shorter streams

    def step():
        out, kl = block(x, pad, select=top_k if sparse else 0, fit=sparse)
        (out.square().mean() + kl).backward()

    step()
    before = _rss_mib()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    path = "gathered" if sparse and length > block.gather_from * top_k else "masked fused"
    return {"ms_per_step": 1e3 * best, "peak_MiB": _rss_mib() - before, "path": path}


def model_worker(name: str, profile: str = "quick") -> dict:
    import numpy as np
    import torch

    import glasskit as gk
    from glasskit.pipeline import load, model_and_batcher
    from glasskit.ranking import rank
    from glasskit.train import make_optimizer, train_step

    model_name, _, variant = name.partition(":")
    cfg = gk.configure(profile, model=model_name, variant=variant or None)
    ds, table = load(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, device)
    opt = make_optimizer(model, cfg)
    bs = cfg.train.batch_size
    batches = [batcher.batch("train", np.arange(i, i + bs)) for i in range(0, bs * 6, bs)]
    model.train()
    train_step(model, batches[0], opt, cfg, device)
    before = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        for b in batches[1:]:
            train_step(model, b, opt, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    out = {"train_samples_per_s": bs * (len(batches) - 1) / best,
           "train_peak_MiB": (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                              else _rss_mib() - before),
           "params": sum(p.numel() for p in model.parameters())}
    model.eval()
    index = table.index(device)
    users = np.arange(min(256, len(ds.splits["test"])))
    tb = batcher.batch("test", users)
    with torch.no_grad():
        for beam in BEAMS:
            rank(model, "sid", tb, index, beam, min(beam, 20))
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                rank(model, "sid", tb, index, beam, min(beam, 20))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
            out[f"infer_ms_beam{beam}"] = 1e3 * best / len(users)
    return out


def indexer_quality(run: str) -> dict:
    """Share of the full attention's mass (mean over heads) on the indexer's top-k keys."""
    import numpy as np
    import torch

    from glasskit.evaluation import load_run_model
    from glasskit.models.layers import attend_mask
    from glasskit.runs import Run

    model, batcher, _, cfg = load_run_model(Run(run), "cpu")
    model.eval()
    held, total = 0.0, 0
    captured_by_random = oracle = 0.0
    n = len(batcher.ds.splits["test"])
    with torch.no_grad():
        for start in range(0, n, 256):
            batch = batcher.batch("test", np.arange(start, min(n, start + 256)))
            hist = batch["hist"]
            B, U, L = hist.shape
            age = torch.arange(U, 0, -1)
            x = model.item_mlp(model.emb(hist).reshape(B, U, L * model.d))
            x = x + model.pos.weight[age.clamp_max(model.history)]
            sel = (age > model.recent_len) & (age <= model.lifecycle_from)
            h, pad = x[:, sel], hist[:, sel, 0] < 0
            for block in model.mid:
                z = block.ln1(h)
                T = z.shape[1]
                k = min(model.top_k, T)
                _, w = block.attn(z, z, mask=attend_mask(pad), need_weights=True)
                w = w.mean(1)  # (B, T, T)
                s = block.indexer_scores(z).masked_fill(pad[:, None, :], float("-inf"))
                top = s.topk(k, -1).indices
                real = ~pad & (~pad).sum(1, keepdim=True).gt(k)  # queries with more keys than k
                mass = w.gather(-1, top).sum(-1)
                held += float(mass[real].sum())
                oracle += float(w.topk(k, -1).values.sum(-1)[real].sum())
                captured_by_random += float((k / (~pad).sum(1, keepdim=True).clamp_min(1))
                                            .expand_as(mass)[real].sum())
                total += int(real.sum())
                h, _ = block(h, pad, model.top_k, False)
    return {"queries": total, "topk": model.top_k,
            "mass_on_indexer_topk": held / max(total, 1),
            "mass_on_best_topk": oracle / max(total, 1),
            "mass_if_keys_were_random": captured_by_random / max(total, 1)}


def _spawn(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "worker", *args], check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gems", default=str(ROOT / "runs/cmp/ml-100k/gems-s0"))
    ap.add_argument("--full-mid", default=str(ROOT / "runs/cmp/ml-100k/gems-full-mid-s0"))
    args = ap.parse_args()

    print("GEMs mid-term block, one training step (B=16, d=64, 4 heads, top-k 32, 1 indexer head)")
    for length in LENGTHS:
        full, sparse = _spawn("block", str(length), "0"), _spawn("block", str(length), "1")
        print(f"  T={length:5d}  full {full['ms_per_step']:8.2f} ms {full['peak_MiB']:7.1f} MiB   "
              f"indexer top-k ({sparse['path']:>12s}) {sparse['ms_per_step']:8.2f} ms "
              f"{sparse['peak_MiB']:7.1f} MiB   "
              f"time ratio full/top-k {full['ms_per_step'] / sparse['ms_per_step']:.2f}   "
              f"memory ratio {full['peak_MiB'] / max(sparse['peak_MiB'], 1e-3):.2f}")
    for label, run in (("gems (top-k)", args.gems), ("gems full-mid", args.full_mid)):
        metrics = Path(run) / "metrics.json"
        if metrics.exists():
            m = json.loads(metrics.read_text())
            t = m["test"][m["primary"]]
            print(f"  {label:14s} {Path(run).name}: test hit@10 {t['hit@10']:.4f}  "
                  f"ndcg@10 {t['ndcg@10']:.4f}  train {m['train_seconds']:.0f} s")
        else:
            print(f"  {label}: no finished run at {run}")
    if (Path(args.gems) / "metrics.json").exists():
        q = _spawn("quality", args.gems)
        print(f"  indexer top-{q['topk']} holds {q['mass_on_indexer_topk']:.3f} of the full attention's "
              f"mass over {q['queries']} test queries (the attention's own top-{q['topk']}: "
              f"{q['mass_on_best_topk']:.3f}; random keys: {q['mass_if_keys_were_random']:.3f})")

    print("\nIntRR vs TIGER, quick profile on ml-100k (each model in its own process)")
    rows = {name: _spawn("model", name) for name in ("tiger", "intrr", "glass:sidtier+shs+cr")}
    base = rows["tiger"]
    keys = ["train_samples_per_s", "train_peak_MiB", *[f"infer_ms_beam{b}" for b in BEAMS]]
    print(f"  {'model':22s}" + "".join(f"{k:>22s}" for k in keys))
    for name, r in rows.items():
        print(f"  {name:22s}" + "".join(f"{r[k]:14.2f} ({r[k] / base[k]:4.2f}x)" for k in keys))
    print("  (x: ratio to TIGER; parameters: "
          + ", ".join(f"{n} {r['params']:,}" for n, r in rows.items()) + ")")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        kind, *rest = sys.argv[2:]
        if kind == "block":
            result = block_worker(int(rest[0]), rest[1] == "1")
        elif kind == "model":
            result = model_worker(rest[0])
        else:
            result = indexer_quality(rest[0])
        print(json.dumps(result))
    else:
        main()
