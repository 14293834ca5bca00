"""Peer check: glasskit's TIGER next to cornac==3.0.1's TIGER on the same ml-100k split, the
same item embeddings, the same training samples, model sizes and thread count, and glasskit's
metric code; quality and training speed both ways.

Like for like: cornac trains on every prefix of each training session (up to 20 inputs), so
the glasskit runs compared with it train on every training position
(``--set data.train_targets_per_user=null``) with the same codebooks (128,128,128 + the
collision level), sizes (d 64, ff 128, 4 heads x 16, 2+2 layers, 20 inputs, dropout 0.1) and
threads (``THREADS``, default 2). Samples/s counts training samples over the time of the
training loop alone: glasskit's per-epoch ``train_seconds``, cornac's ``_fit_seq2seq`` minus
its per-epoch validation.

cornac lives in its own virtual environment (never a glasskit dependency); ``bench/peer_cornac.sh``
creates it and runs the three phases:

    export  (glasskit env) the leave-one-out sessions, the MiniLM item embeddings, the test
            histories and seen-item lists, to DIR/peer.npz
    fit     (cornac env)   cornac TIGER trained on the training sessions, validated on the
            validation sessions, ranks every test history by beam search and by exact
            scoring; writes DIR/cornac_ranked_{beam,exact}.npy
    report  (glasskit env) Hit@K / NDCG@K of both (history-masked, glasskit's ranking_metrics)
            and the training-time ratio, from glasskit TIGER run directories; glasskit is
            also re-evaluated at a wider beam (a beam of 20 truncates Hit@20, cornac's exact
            scoring does not)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def export(out: Path) -> None:
    import glasskit as gk
    from glasskit.data import prepare

    ds = prepare(gk.profile("quick"))
    seqs = ds.seqs
    test = ds.splits["test"]
    sessions = {}
    for split, last in (("train", -2), ("valid", -1), ("test", None)):
        rows = []
        for u in range(seqs.n_users):
            items = seqs.user_items(u)[: last if last else None]
            rows += [(f"{split}-{u}", int(i), k) for k, i in enumerate(items)]
        sessions[split] = np.array(rows, dtype=object)
    hist = [seqs.user_items(u)[: t] for u, t in zip(test.user, test.t)]
    np.savez(out / "peer.npz", train=sessions["train"], valid=sessions["valid"],
             test_hist=np.array([h.astype(np.int64) for h in hist], dtype=object),
             targets=seqs.items[seqs.offsets[test.user] + test.t],
             embeddings=ds.embeddings(), n_items=seqs.n_items, allow_pickle=True)


def fit(out: Path, epochs: int, threads: int) -> None:
    import torch
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation
    from cornac.models import TIGER

    z = np.load(out / "peer.npz", allow_pickle=True)
    n_items = int(z["n_items"])
    to_tuples = [(s, str(i), int(t)) for s, i, t in z["train"].tolist()]
    val = [(s, str(i), int(t)) for s, i, t in z["valid"].tolist()]
    ev = NextItemEvaluation.from_splits(
        train_data=to_tuples, val_data=val, test_data=val, fmt="SIT", mode="last",
        item_feature=FeatureModality(features=z["embeddings"], ids=[str(i) for i in range(n_items)]),
        exclude_unknowns=False, verbose=False)
    model = TIGER(tokenizer="rqvae", rqvae_num_levels=3, rqvae_codebook_size=128, d_model=64,
                  d_ff=128, num_heads=4, d_kv=16, num_enc_layers=2, num_dec_layers=2,
                  dropout=0.1, max_len=20, n_epochs=epochs, learning_rate=1e-3, batch_size=256,
                  model_selection="best", val_eval_every=1, n_beams=20, seed=0, device="cpu",
                  verbose=True)
    torch.set_num_threads(threads)
    timing = {"loop": 0.0, "valid": 0.0}

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timing[name] += time.perf_counter() - t
        return run

    model._fit_seq2seq = timed("loop", model._fit_seq2seq)
    model._validate = timed("valid", model._validate)
    t0 = time.time()
    model.fit(ev.train_set, ev.val_set)
    seconds = time.time() - t0
    samples = sum(len(m) - 1 for m in model.train_set.sessions.values() if len(m) >= 2) * epochs
    iid = ev.global_iid_map
    inv = {v: int(k) for k, v in iid.items()}
    # Two rankings, both history-masked like glasskit's primary ranking on MovieLens:
    # - beam: cornac's constrained beam (20). Its beam cannot skip seen items, so after masking
    #   fewer than 20 real items may remain; unscored slots stay empty (-1), never filled with
    #   arbitrary catalogue items.
    # - exact: cornac's full-catalogue log-likelihood ranking, masked, always 20 real items.
    for scoring in ("beam", "exact"):
        model.scoring = scoring
        ranked = np.full((len(z["targets"]), 20), -1)
        for n, h in enumerate(z["test_hist"]):
            scores = model.score(None, [iid[str(i)] for i in h.tolist()])
            for i in set(h.tolist()):
                scores[iid[str(i)]] = -np.inf
            top = [int(i) for i in np.argsort(-scores, kind="stable")[:20] if scores[i] > -1e9]
            ranked[n, : len(top)] = [inv.get(i, -1) for i in top]
        np.save(out / f"cornac_ranked_{scoring}.npy", ranked)
    (out / "cornac_time.json").write_text(json.dumps({
        "fit_seconds": seconds, "loop_seconds": timing["loop"] - timing["valid"],
        "samples": samples, "threads": threads}))


def report(out: Path, runs: list[str], wide_beam: int) -> None:
    import statistics

    from glasskit.metrics import ranking_metrics
    from glasskit.runs import Run
    from glasskit.train import evaluate_run

    z = np.load(out / "peer.npz", allow_pickle=True)
    ct = json.loads((out / "cornac_time.json").read_text())
    cols = {}
    for scoring in ("beam", "exact"):
        ranked = np.load(out / f"cornac_ranked_{scoring}.npy")
        cols[f"cornac {scoring}"] = [ranking_metrics(ranked, z["targets"])]
        print(f"cornac {scoring}: {(ranked < 0).mean():.1%} of the 20 slots empty after masking")
    ours = [Run(r) for r in runs]
    cols["glasskit beam 20"] = [r.metrics()["test"]["masked"] for r in ours]
    cols[f"glasskit beam {wide_beam}"] = [evaluate_run(r, beam=wide_beam)["masked"] for r in ours]
    print(f"ml-100k quick split, test, history-masked; glasskit: mean ± std over {len(ours)} runs")
    print(f"{'':8s}" + "".join(f"{c:>19s}" for c in cols))
    for k in ("hit@5", "hit@10", "ndcg@10", "hit@20", "ndcg@20"):
        cells = []
        for ms in cols.values():
            v = [m[k] for m in ms]
            sd = f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else ""
            cells.append(f"{statistics.mean(v):.4f}{sd}")
        print(f"{k:8s}" + "".join(f"{c:>19s}" for c in cells))
    speeds = []
    for r in ours:
        cfg, m = r.config, r.metrics()
        if cfg.data.train_targets_per_user is not None:
            print(f"{r.path}: trains on the last {cfg.data.train_targets_per_user} positions per "
                  "user, not every prefix as cornac does: no speed comparison")
            return
        from glasskit.data import prepare

        n = len(prepare(cfg).splits["train"])
        speeds.append(n * len(m["history"]) / sum(h["train_seconds"] for h in m["history"]))
    cornac = ct["samples"] / ct["loop_seconds"]
    ours_sps = statistics.mean(speeds)
    print(f"training samples/s ({ct['threads']} threads, training loop only): glasskit "
          f"{ours_sps:.0f} (mean of {len(speeds)}, {[round(v) for v in speeds]}), cornac "
          f"{cornac:.0f}; glasskit / cornac = {ours_sps / cornac:.2f}")


if __name__ == "__main__":
    phase, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if phase == "export":
        export(folder)
    elif phase == "fit":
        fit(folder, int(sys.argv[3]), int(sys.argv[4]))
    else:  # report DIR WIDE_BEAM RUN_DIR...
        report(folder, sys.argv[4:], int(sys.argv[3]))
