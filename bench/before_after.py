"""Test metrics of every model and registered variant trained by the glasskit of an earlier commit
and by today's, side by side on this machine: the check that a refactor changed no number.

    .venv/bin/python bench/before_after.py --commit 79708af                 # smoke, every row
    .venv/bin/python bench/before_after.py --commit 79708af --profile quick --dataset ml-100k \\
        --rows tiger,glass:sidtier+shs

Each side trains in its own process (the earlier commit's package from ``git archive``) into
its own run store; one torch job at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, sys, time
import glasskit as gk
from glasskit.train import train
rows, profile, dataset, store = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None, sys.argv[4]
out = {}
for model, variant in rows:
    cfg = gk.configure(profile, dataset, model=model, variant=variant)
    t0 = time.time()
    run = train(cfg, out=f"{store}/{model}-{variant or 'default'}", progress=False)
    m = run.metrics()
    out[f"{model}:{variant or ''}"] = {**m["test"][m["primary"]], "seconds": time.time() - t0,
                                        "epochs": m["epochs_run"]}
print(json.dumps(out))
'''


def all_rows() -> list[tuple[str, str | None]]:
    from glasskit.models import REGISTRY

    return [(name, v) for name, entry in REGISTRY.items() for v in (None, *entry.variants)]


def side(rows, profile: str, dataset: str, store: Path, pythonpath: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(rows), profile, dataset or "",
                          str(store)], capture_output=True, text=True, env=env, cwd=store.parent)
    if res.returncode:
        sys.exit(res.stderr[-3000:])
    return json.loads(res.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commit", required=True)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--dataset", default="")
    p.add_argument("--rows", default="", help="model[:variant],... (default: every row)")
    args = p.parse_args()
    rows = ([(r.split(":")[0], r.split(":")[1] if ":" in r else None) for r in args.rows.split(",")]
            if args.rows else all_rows())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.commit, "glasskit"],
                             capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(tar)) as t:
            t.extractall(tmp / "old", filter="data")
        (tmp / "before").mkdir()
        (tmp / "after").mkdir()
        before = side(rows, args.profile, args.dataset, tmp / "before" / "runs", str(tmp / "old"))
        after = side(rows, args.profile, args.dataset, tmp / "after" / "runs", None)
    print(f"profile {args.profile}{', ' + args.dataset if args.dataset else ''}, seed 0; "
          f"before = {args.commit}, after = the working tree\n")
    print("| row | NDCG@10 before | NDCG@10 after | Hit@10 before | Hit@10 after | epochs | same |")
    print("|---|---|---|---|---|---|---|")
    for key, b in before.items():
        a = after[key]
        same = all(a[k] == b[k] for k in b if k != "seconds")
        print(f"| {key.rstrip(':')} | {b['ndcg@10']:.4f} | {a['ndcg@10']:.4f} | {b['hit@10']:.4f} | "
              f"{a['hit@10']:.4f} | {b['epochs']} / {a['epochs']} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
