"""How each stage grows with the data, on synthetic data shaped like KuaiRec's big matrix (7,176
users with ~1,746 interactions each, 10,728 items): at 0.1M, 1M and 12.5M interactions the
number of users grows and the history length stays KuaiRec's.

Per size, each stage runs in its own process (so its peak resident memory is its own):

- ``data``: reading the interactions CSV, sequences and leave-one-out splits (``prepare``);
- ``tokenize``: item embeddings (a truncated SVD of the training interactions: the data has no
  text) and the RQ-VAE semantic IDs, data preparation included;
- ``train tiger``, ``train glass-500``, ``train glass-1000``: one training epoch (20 targets per
  user, the quick profile's sizes; GLASS ``sidtier+shs`` with ``long_max`` 500 and 1000);
- ``infer tiger``, ``infer glass-500``: beam-20 ranking of every test user, after a warm-up on
  8 users (the prefix index and first-call set-up are not the per-user cost).

It prints seconds and peak RSS per stage and size, and the growth exponent k of each stage
(cost ∝ size^k, a least-squares fit over the sizes). Usage::

    .venv/bin/python bench/bench_scale.py                    # 0.1M, 1M, 12.5M (about an hour on 2 cores)
    .venv/bin/python bench/bench_scale.py --sizes 1e5,1e6    # minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HISTORY, ITEMS, USERS_FULL = 1746, 10728, 7176
STAGES = ("data", "tokenize", "train tiger", "train glass-500", "train glass-1000", "infer tiger",
          "infer glass-500")


def write_csv(folder: Path, interactions: int, seed: int = 0) -> int:
    """interactions.csv with KuaiRec's shape: users with ~HISTORY items each (lengths vary by
    ±50%), items drawn from a Zipf-like popularity over ITEMS, timestamps increasing per user,
    ``label`` 1 for about two thirds of the rows (KuaiRec's watch_ratio > 1), the rest exposure
    negatives. Returns the number of users."""
    rng = np.random.default_rng(seed)
    users = max(4, round(interactions / HISTORY))
    lengths = rng.integers(HISTORY // 2, HISTORY * 3 // 2, users)
    lengths = np.maximum(8, np.round(lengths * interactions / lengths.sum()).astype(np.int64))
    n = int(lengths.sum())
    popularity = 1.0 / np.arange(1, ITEMS + 1) ** 0.8
    items = rng.choice(ITEMS, size=n, p=popularity / popularity.sum())
    user = np.repeat(np.arange(users), lengths)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ts = 1_593_878_903 + (np.arange(n) - start) * 60 + user
    label = (rng.random(n) < 0.67).astype(np.int8)
    folder.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    pd.DataFrame({"user_id": user, "item_id": items, "timestamp": ts, "label": label}).to_csv(
        folder / "interactions.csv", index=False)
    return users


def config(folder: Path, stage: str):
    import glasskit as gk

    model, long_max = "tiger", 500
    if "glass" in stage:
        model, long_max = "glass", int(stage.rsplit("-", 1)[1])
    return gk.configure("quick", "csv", str(folder), model=model,
                        variant="sidtier+shs" if model == "glass" else None,
                        explicit={"data.long_max": long_max, "embed.method": "interactions",
                                  "train.epochs": 1})


def run_stage(folder: Path, stage: str) -> dict:
    """One stage in this process; seconds of the stage itself and this process's peak RSS."""
    import torch

    from glasskit.data import prepare
    from glasskit.pipeline import load, model_and_batcher

    cfg = config(folder, stage)
    if stage == "data":
        t = time.perf_counter()
        ds = prepare(cfg)
        return {"seconds": time.perf_counter() - t, "samples": len(ds.splits["train"])}
    if stage == "tokenize":
        t = time.perf_counter()
        load(cfg)
        return {"seconds": time.perf_counter() - t}
    ds, table = load(cfg)  # cached by the tokenize stage
    model, batcher = model_and_batcher(cfg, ds, table, torch.device("cpu"))
    if stage.startswith("train"):
        from glasskit.train import make_optimizer, train_step

        opt = make_optimizer(model, cfg)
        model.train()
        t = time.perf_counter()
        n = 0
        for idx, batch in batcher.iterate("train", cfg.train.batch_size, shuffle=True):
            train_step(model, batch, opt, cfg, torch.device("cpu"))
            n += len(idx)
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "samples_per_s": n / seconds}
    from glasskit.evaluation import evaluate

    warm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_batch_size=8))
    with mock.patch.object(ds.splits["test"], "user", ds.splits["test"].user[:8]), \
            mock.patch.object(ds.splits["test"], "t", ds.splits["test"].t[:8]):
        evaluate(model, batcher, "test", warm, masked=False)  # one-off set-up (prefix index, ...)
    t = time.perf_counter()
    evaluate(model, batcher, "test", cfg, masked=False)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "ms_per_user": 1000 * seconds / len(ds.splits["test"])}


def exponent(sizes: list[float], values: list[float]) -> float:
    """k of value ∝ size^k, least squares in log-log."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e5,1e6,1.25e7")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--stage", help=argparse.SUPPRESS)  # internal: one stage in this process
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        out = run_stage(Path(args.folder), args.stage)
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return 0
    sizes = [float(s) for s in args.sizes.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    results: dict[str, dict[float, dict]] = {s: {} for s in stages}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            folder = Path(tmp) / f"{size:.0e}"
            users = write_csv(folder, int(size))
            print(f"== {size:.3g} interactions, {users} users", flush=True)
            for stage in stages:
                res = subprocess.run([sys.executable, __file__, "--stage", stage, "--folder", str(folder)],
                                     capture_output=True, text=True,
                                     env={**__import__("os").environ, "GLASSKIT_CACHE": f"{tmp}/cache"})
                if res.returncode:
                    print(f"{stage}: failed\n{res.stderr[-2000:]}", flush=True)
                    results[stage][size] = {"failed": res.stderr.strip().splitlines()[-1:]}
                    continue
                results[stage][size] = json.loads(res.stdout.splitlines()[-1])
                r = results[stage][size]
                print(f"  {stage:17s} {r['seconds']:8.1f} s  {r['rss_mb']:8.0f} MB", flush=True)
    head = "| stage | " + " | ".join(f"{s:.3g}: s / peak MB" for s in sizes) + " | k (time) | k (memory) |"
    lines = [head, "|" + "---|" * (len(sizes) + 3)]
    for stage, by_size in results.items():
        ok = [s for s in sizes if "seconds" in by_size.get(s, {})]
        cells = [f"{by_size[s]['seconds']:.1f} / {by_size[s]['rss_mb']:.0f}" if s in ok else "failed"
                 for s in sizes]
        k_t = exponent(ok, [by_size[s]["seconds"] for s in ok]) if len(ok) > 1 else math.nan
        k_m = exponent(ok, [by_size[s]["rss_mb"] for s in ok]) if len(ok) > 1 else math.nan
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {k_t:.2f} | {k_m:.2f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
