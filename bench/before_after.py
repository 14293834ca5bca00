"""Test metrics of every model and registered variant trained by the glasskit of an earlier commit
and by today's, side by side on this machine: the check that a refactor changed no number.

    .venv/bin/python bench/before_after.py --commit 79708af                 # smoke, every row
    .venv/bin/python bench/before_after.py --commit 79708af --profile quick --dataset ml-100k \\
        --rows tiger,glass:sidtier+shs
    .venv/bin/python bench/before_after.py --commit 7454ff9 --profile quick --rows gems,gems:full-mid \\
        --seeds 0,1,2 --store bench/results/gems-stage3      # resumable: finished runs are reused
    .venv/bin/python bench/before_after.py --commit 2ca982d --profile quick --rows dualgr,dualgr:no-entp \\
        --set data.min_rating=4 --seeds 0,1,2 --store bench/results/dualgr-entp

Each side trains in its own process (the earlier commit's package from ``git archive``) into
its own run store; one torch job at a time. With ``--store``, a row whose runs on both sides keep
per-user ranks (ranks.npz; an older commit's run gets them from ``python -m glasskit train
--config RUN/config.yaml --out RUN``) is also tested after against before, paired over users
(Wilcoxon per seed, Stouffer over seeds; glasskit.analysis.significance).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, sys, time
import glasskit as gk
from glasskit.train import train
rows, profile, dataset, store = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None, sys.argv[4]
seeds, overrides = json.loads(sys.argv[5]), json.loads(sys.argv[6])
out = {}
for model, variant in rows:
    for seed in seeds:
        cfg = gk.configure(profile, dataset, seed=seed, model=model, variant=variant,
                           explicit=overrides)
        t0 = time.time()
        run = train(cfg, out=f"{store}/{model}-{variant or 'default'}-s{seed}", progress=False)
        m = run.metrics()
        out[f"{model}:{variant or ''}:{seed}"] = {**m["test"][m["primary"]], "ranking": m["primary"],
                                                   "seconds": time.time() - t0,
                                                   "epochs": m["epochs_run"],
                                                   "best_stage": m.get("best_stage")}
        print(f"{model}:{variant or ''} seed {seed} done", file=sys.stderr, flush=True)
print(json.dumps(out))
'''


def all_rows() -> list[tuple[str, str | None]]:
    from glasskit.models import REGISTRY

    return [(name, v) for name, entry in REGISTRY.items() for v in (None, *entry.variants)]


def side(rows, profile: str, dataset: str, store: Path, pythonpath: str | None, seeds: list[int],
         overrides: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(rows), profile, dataset or "",
                          str(store), json.dumps(seeds), json.dumps(overrides)],
                         stdout=subprocess.PIPE, text=True, env=env, cwd=store.parent)
    if res.returncode:
        sys.exit(f"the {store.parent.name} side failed (rc {res.returncode}); rerun to resume")
    return json.loads(res.stdout.splitlines()[-1])


def _package(commit: str, where: Path) -> str:
    """glasskit as of ``commit``, unpacked under ``where`` (a PYTHONPATH entry)."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "glasskit"],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(where, filter="data")
    return str(where)


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else "")


def paired(root: Path, row: str, seeds: list[int], ranking: str, metric: str = "ndcg@10"
           ) -> str:
    """After against before for one row of a store: effect [95% CI], p; "" without ranks."""
    from glasskit.analysis.significance import paired_test, per_user_metric

    model, _, variant = row.partition(":")
    per_side = {}
    for name in ("before", "after"):
        values = {}
        for seed in seeds:
            f = root / name / "runs" / f"{model}-{variant or 'default'}-s{seed}" / "ranks.npz"
            if not f.is_file():
                return ""
            with np.load(f) as z:
                values[seed] = (z["test_users"], per_user_metric(z[f"test_{ranking}"], metric))
        per_side[name] = values
    if any(not np.array_equal(per_side["before"][s][0], per_side["after"][s][0]) for s in seeds):
        return "other users"
    res = paired_test({s: v for s, (_, v) in per_side["after"].items()},
                      {s: v for s, (_, v) in per_side["before"].items()})
    return f"{res.effect:+.4f} [{res.ci[0]:+.4f}, {res.ci[1]:+.4f}], p {res.p:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commit", required=True)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--dataset", default="")
    p.add_argument("--rows", default="", help="model[:variant],... (default: every row)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on both sides (repeatable), e.g. data.min_rating=4")
    p.add_argument("--after", default="", help="a commit for the after side (default: the working "
                   "tree, which then must not change while this runs)")
    p.add_argument("--store", default="", help="keep the runs here (resumable); default a temp dir")
    args = p.parse_args()
    import yaml

    rows = ([(r.split(":")[0], r.split(":")[1] if ":" in r else None) for r in args.rows.split(",")]
            if args.rows else all_rows())
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE, e.g. data.min_rating=4")
        overrides[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.store).resolve() if args.store else Path(tmp)
        old, new = _package(args.commit, Path(tmp) / "old"), None
        if args.after:
            new = _package(args.after, Path(tmp) / "new")
        for name in ("before", "after"):
            (root / name).mkdir(parents=True, exist_ok=True)
        before = side(rows, args.profile, args.dataset, root / "before" / "runs", str(old), seeds,
                      overrides)
        after = side(rows, args.profile, args.dataset, root / "after" / "runs", new, seeds,
                     overrides)
    if args.store:
        (root / "results.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
    print(f"profile {args.profile}{', ' + args.dataset if args.dataset else ''}, seeds {args.seeds}"
          f"{', ' + ' '.join(args.set) if args.set else ''}; before = {args.commit}, after = "
          f"{args.after or 'working tree'}; test, primary ranking, mean ± sd over seeds\n")
    print("| row | NDCG@10 before | NDCG@10 after | Hit@10 before | Hit@10 after | epochs before / "
          "after | same | after - before, NDCG@10 per user [95% CI], p |")
    print("|---|---|---|---|---|---|---|---|")
    for row in dict.fromkeys(k.rsplit(":", 1)[0] for k in before):
        b = [v for k, v in before.items() if k.rsplit(":", 1)[0] == row]
        a = [v for k, v in after.items() if k.rsplit(":", 1)[0] == row]
        same = all(x[k] == y[k] for x, y in zip(b, a) for k in ("ndcg@10", "hit@10"))
        print(f"| {row.rstrip(':')} | {_mean_sd([x['ndcg@10'] for x in b])} | "
              f"{_mean_sd([x['ndcg@10'] for x in a])} | {_mean_sd([x['hit@10'] for x in b])} | "
              f"{_mean_sd([x['hit@10'] for x in a])} | {[x['epochs'] for x in b]} / "
              f"{[x['epochs'] for x in a]} | {'yes' if same else 'NO'} | "
              f"{paired(root, row.rstrip(':'), seeds, b[0]['ranking']) if args.store else ''} |")


if __name__ == "__main__":
    main()
