"""Validation and test NDCG@10 at every epoch of one run, for diagnosis only: is a row's best
validation figure a fair guide to its test figure? (README, "The SID rows lose far more from
validation to test than SASRec".) The run trains exactly as ``glasskit train`` would, one epoch
per call (resuming is bit-exact), and after each epoch the test split is ranked from that
epoch's last.pt. The test figures choose nothing: the run keeps its own best validation epoch.

    .venv/bin/python bench/valid_test_curves.py --profile converge --model intrr --out /tmp/vt-intrr
    .venv/bin/python bench/valid_test_curves.py --profile converge --model sasrec --out /tmp/vt-sasrec

Rerun the same command to resume. Prints one row per epoch and a summary: the test figure at
the best validation epoch, the mean test/validation ratio over all epochs and over the best
epoch and the ten after it, and the correlation of the two curves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from glasskit.evaluation import evaluate, primary_ranking, run_sid_table
from glasskit.io import read_json, write_json
from glasskit.pipeline import load, model_and_batcher
from glasskit.profiles import configure
from glasskit.runs import Run, load_checkpoint
from glasskit.train import Interrupted, train


def curves(cfg, out: Path) -> list[dict]:
    """(epoch, validation NDCG@10, test NDCG@10) of every epoch, resumed from ``out``."""
    ds, built = load(cfg)
    device = torch.device("cpu")
    model = batcher = table = None
    masked = primary_ranking(ds) == "masked"
    kept = out / "curves.json"
    rows = read_json(kept, "delete it to measure again") if kept.is_file() else []
    while True:
        trained = Run(out).metrics().get("history", []) if (out / "run.json").is_file() else []
        if len(trained) > len(rows):
            raise SystemExit(f"{out}: holds epochs without their test figures ({kept} is missing "
                             "or behind): give a new --out")
        try:
            train(cfg, out=out, progress=False, stop_after=len(rows) + 1)
            finished = True
        except Interrupted:
            finished = False
        history = Run(out).metrics()["history"]
        if len(history) > len(rows):  # the epoch just trained (none when the run was done)
            h = history[-1]
            if model is None:  # the run's own SID table, once training has pinned it
                table = run_sid_table(out, built, cfg, ds.fingerprint)
                model, batcher = model_and_batcher(cfg, ds, table, device)
            model.load_state_dict(load_checkpoint(out / "last.pt", cfg, device, ds.fingerprint,
                                                  table)["model"])
            test = evaluate(model, batcher, "test", cfg, masked)["ndcg@10"]
            rows.append({"epoch": h["epoch"], "valid": h["valid_ndcg@10"], "test": test})
            print(f"epoch {h['epoch']}: valid {h['valid_ndcg@10']:.4f} test {test:.4f}", flush=True)
            write_json(kept, rows)
        if finished:
            return rows


def summary(rows: list[dict], best_epoch: int) -> dict[str, float]:
    valid, test = np.array([r["valid"] for r in rows]), np.array([r["test"] for r in rows])
    plateau = slice(best_epoch - 1, best_epoch + 10)
    return {"best epoch": best_epoch, "valid at best": valid[best_epoch - 1],
            "test at best": test[best_epoch - 1],
            "test/valid, every epoch": float(np.mean(test / valid)),
            "test/valid, best and 10 after": float(np.mean(test[plateau] / valid[plateau])),
            "correlation of the curves": float(np.corrcoef(valid, test)[0, 1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="converge")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", required=True, help="a model, or model:variant (glass:sidtier+shs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the run folder (resumed when it exists)")
    args = ap.parse_args()
    model, _, variant = args.model.partition(":")
    cfg = configure(args.profile, args.dataset, args.data_dir, args.seed, model=model,
                    variant=variant or None)
    out = Path(args.out)
    rows = curves(cfg, out)
    for k, v in summary(rows, Run(out).metrics()["best_epoch"]).items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
