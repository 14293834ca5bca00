"""Peer check: glasskit's TIGER or SASRec next to cornac==3.0.1's on the same ml-100k split,
the same item embeddings (TIGER), the same training samples, model sizes and thread count, and
glasskit's metric code; quality and training speed both ways.

Like for like: cornac trains on every prefix of each training session, so the glasskit TIGER runs
compared with it train on every training position (``--set data.train_targets_per_user=null``)
with the same codebooks (128,128,128 + the collision level), sizes (d 64, ff 128, 4 heads x 16,
2+2 layers, 20 inputs, dropout 0.1); SASRec trains on every position on both sides (d 64, 4
heads, 2 blocks, 50 items, dropout 0.2, full-softmax CE). Threads: ``THREADS`` (default 2).
Samples/s counts predicted training positions over the time of the training loop alone, one
epoch each side, taken one after the other: glasskit's per-epoch ``train_seconds``, cornac's
loop minus its per-epoch validation.

cornac lives in its own virtual environment (never a glasskit dependency); ``bench/peer_cornac.sh``
creates it and runs the phases:

    export  (glasskit env) the leave-one-out sessions, the MiniLM item embeddings, the test
            histories and seen-item lists, to DIR/peer.npz
    fit     (cornac env)   cornac's model trained on the training sessions, best epoch on the
            validation sessions; ranks every test history (TIGER: by beam search and by exact
            scoring; SASRec: the whole catalogue); DIR/cornac_<model>_<epochs>_ranked_*.npy
    report  (glasskit env) Hit@K / NDCG@K of both (history-masked, glasskit's ranking_metrics)
            and the training speed ratio; glasskit TIGER is also re-evaluated at a wider beam
            (a beam of 20 truncates Hit@20, cornac's exact scoring does not)
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


def fit(out: Path, epochs: int, threads: int, model_name: str = "tiger", rank: bool = True) -> None:
    import torch
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation
    from cornac.models import TIGER, SASRec

    z = np.load(out / "peer.npz", allow_pickle=True)
    n_items = int(z["n_items"])
    to_tuples = [(s, str(i), int(t)) for s, i, t in z["train"].tolist()]
    val = [(s, str(i), int(t)) for s, i, t in z["valid"].tolist()]
    ev = NextItemEvaluation.from_splits(
        train_data=to_tuples, val_data=val, test_data=val, fmt="SIT", mode="last",
        item_feature=FeatureModality(features=z["embeddings"], ids=[str(i) for i in range(n_items)]),
        exclude_unknowns=False, verbose=False)
    if model_name == "sasrec":  # glasskit's quick SASRec: d 64, 4 heads, 2 blocks, 50 items, CE
        model = SASRec(embedding_dim=64, loss="ce", batch_size=256, learning_rate=1e-3,
                       n_epochs=epochs, max_len=50, num_blocks=2, num_heads=4, dropout=0.2,
                       model_selection="best", val_eval_every=1, val_k=10, val_metric="ndcg",
                       seed=0, device="cpu", verbose=True)
    else:
        model = TIGER(tokenizer="rqvae", rqvae_num_levels=3, rqvae_codebook_size=128, d_model=64,
                      d_ff=128, num_heads=4, d_kv=16, num_enc_layers=2, num_dec_layers=2,
                      dropout=0.1, max_len=20, n_epochs=epochs, learning_rate=1e-3, batch_size=256,
                      model_selection="best", val_eval_every=1, n_beams=20, seed=0, device="cpu",
                      verbose=True)
    torch.set_num_threads(threads)
    if model_name == "sasrec":  # its loop is fit() itself, validation inside
        import cornac.models.sasrec.recom_sasrec as mod

        timing = {"loop": 0.0, "valid": 0.0}
        inner = mod.val_score

        def timed_val(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                timing["valid"] += time.perf_counter() - t

        mod.val_score = timed_val
        t0 = time.time()
        model.fit(ev.train_set, ev.val_set)
        seconds = time.time() - t0
        timing["loop"] = seconds
        if rank:
            _rank_and_save(out, model, z, ev, ("exact",), f"sasrec_{epochs}")
        _save_time(out, f"sasrec_{epochs}", seconds, timing, model, epochs, threads)
        return
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
    if rank:
        _rank_and_save(out, model, z, ev, ("beam", "exact"), f"tiger_{epochs}")
    _save_time(out, f"tiger_{epochs}", seconds, timing, model, epochs, threads)


def _save_time(out: Path, tag: str, seconds: float, timing: dict, model, epochs: int,
               threads: int) -> None:
    samples = sum(len(m) - 1 for m in model.train_set.sessions.values() if len(m) >= 2) * epochs
    (out / f"cornac_{tag}_time.json").write_text(json.dumps({
        "fit_seconds": seconds, "loop_seconds": timing["loop"] - timing["valid"],
        "samples": samples, "threads": threads, "epochs": epochs}))


def _rank_and_save(out: Path, model, z, ev, scorings: tuple[str, ...], tag: str) -> None:
    iid = ev.global_iid_map
    inv = {v: int(k) for k, v in iid.items()}
    # Two rankings, both history-masked like glasskit's primary ranking on MovieLens:
    # - beam: cornac's constrained beam (20). Its beam cannot skip seen items, so after masking
    #   fewer than 20 real items may remain; unscored slots stay empty (-1), never filled with
    #   arbitrary catalogue items.
    # - exact: cornac's full-catalogue log-likelihood ranking, masked, always 20 real items.
    for scoring in scorings:
        if hasattr(model, "scoring"):
            model.scoring = scoring
        ranked = np.full((len(z["targets"]), 20), -1)
        for n, h in enumerate(z["test_hist"]):
            scores = model.score(None, [iid[str(i)] for i in h.tolist()])
            for i in set(h.tolist()):
                scores[iid[str(i)]] = -np.inf
            top = [int(i) for i in np.argsort(-scores, kind="stable")[:20] if scores[i] > -1e9]
            ranked[n, : len(top)] = [inv.get(i, -1) for i in top]
        np.save(out / f"cornac_{tag}_ranked_{scoring}.npy", ranked)


def report(out: Path, model_name: str, epochs: int, wide_beam: int, runs: list[str]) -> None:
    import statistics

    from glasskit.data import prepare
    from glasskit.evaluation import evaluate_run
    from glasskit.metrics import ranking_metrics
    from glasskit.runs import Run

    z = np.load(out / "peer.npz", allow_pickle=True)
    tag = f"{model_name}_{epochs}"
    cols = {}
    for scoring in ("beam", "exact"):
        path = out / f"cornac_{tag}_ranked_{scoring}.npy"
        if path.exists():
            ranked = np.load(path)
            cols[f"cornac {scoring}"] = [ranking_metrics(ranked, z["targets"])]
            print(f"cornac {scoring}: {(ranked < 0).mean():.1%} of the 20 slots empty after masking")
    ours = [Run(r) for r in runs]
    cols["glasskit"] = [r.metrics()["test"]["masked"] for r in ours]
    if model_name == "tiger":
        cols[f"glasskit beam {wide_beam}"] = [evaluate_run(r, beam=wide_beam)["masked"] for r in ours]
    print(f"{model_name}, ml-100k quick split, test, history-masked; glasskit: mean ± std over "
          f"{len(ours)} runs; cornac {epochs} epochs, best on validation")
    print(f"{'':8s}" + "".join(f"{c:>19s}" for c in cols))
    for k in ("hit@5", "hit@10", "ndcg@10", "hit@20", "ndcg@20"):
        cells = []
        for ms in cols.values():
            v = [m[k] for m in ms]
            sd = f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else ""
            cells.append(f"{statistics.mean(v):.4f}{sd}")
        print(f"{k:8s}" + "".join(f"{c:>19s}" for c in cells))
    # speed: one epoch each side, measured one after the other with nothing else running
    speed = out / f"speed-glasskit-{model_name}"
    timing = out / f"cornac_{model_name}_1_time.json"
    if not (speed / "metrics.json").exists() or not timing.exists():
        print("no speed phase found (bench/peer_cornac.sh runs it)")
        return
    run = Run(speed)
    cfg = run.config.replace(**{"data.train_targets_per_user": None})
    n = len(prepare(cfg).splits["train"])  # every training position, as cornac trains
    ours_sps = n / run.metrics()["history"][0]["train_seconds"]
    ct = json.loads(timing.read_text())
    cornac = ct["samples"] / ct["loop_seconds"]
    print(f"{model_name} training samples/s, one epoch, {ct['threads']} threads, training loop only "
          f"(predicted positions: glasskit {n}, cornac {ct['samples']}): glasskit {ours_sps:.0f}, "
          f"cornac {cornac:.0f}; glasskit / cornac = {ours_sps / cornac:.2f}")


if __name__ == "__main__":
    phase, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if phase == "export":
        export(folder)
    elif phase == "fit":  # fit DIR EPOCHS THREADS MODEL [--no-rank]
        fit(folder, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], "--no-rank" not in sys.argv)
    else:  # report DIR MODEL EPOCHS WIDE_BEAM RUN_DIR...
        report(folder, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])
