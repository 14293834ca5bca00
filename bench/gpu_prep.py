"""Prepare, on a machine with network and this checkout's .venv, what the GPU check needs on a
GPU machine without network (``make gpu-prep``): under ``.gpu-prep/`` (ignored by git, carried
with the working tree), ``cache/``, a GLASSKIT_CACHE holding the ml-100k files, the item
embeddings and every row's SID table at the quick profile, and ``wheels/``, the CPython 3.12
wheels of what glasskit imports beside torch on the training path (numpy, pandas, pyyaml, tqdm)
and of pytest, and ``data/amazon-s3rec``, the Toys and Sports files of the S3-Rec sets (from
``--amazon``; ignored by git, never committed) with, in the cache, their item embeddings and SID
tables for the rows bench/gpu_runs.sh trains. The GPU machine's own torch (a CUDA build) is used
as it is."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREP = ROOT / ".gpu-prep"
WHEELS = ["numpy==2.3.5", "pandas==2.3.3", "pyyaml==6.0.3", "tqdm==4.67.1", "pytest==8.4.2"]
S3REC_SETS = ("Toys_and_Games", "Sports_and_Outdoors")
# (preset, row) of bench/gpu_runs.sh's s3rec sweeps whose SID tables are built here
S3REC_ROWS = ((None, "tiger"), ("paper", "tiger"), (None, "glass:sidtier+shs"),
              (None, "glass:sidtier+shs+cr"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--amazon", default=str(ROOT.parent / "shared" / "data" / "amazon-s3rec"),
                   help="the S3-Rec folder (default ../shared/data/amazon-s3rec)")
    args = p.parse_args()
    os.environ["GLASSKIT_CACHE"] = str(PREP / "cache")
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import ROWS

    import glasskit as gk
    from glasskit.pipeline import load

    for row in ROWS:
        model, _, variant = row.partition(":")
        ds, table = load(gk.configure("quick", model=model, variant=variant or None))
        ds.embeddings()
        print(f"{row}: {ds.seqs.n_items} items, SID levels {table.sizes}", flush=True)
    amazon = PREP / "data" / "amazon-s3rec"
    amazon.mkdir(parents=True, exist_ok=True)
    names = [f"{n}{suffix}" for n in S3REC_SETS for suffix in (".txt", "_item2attributes.json")]
    for name in [*names, "SHA256SUMS"]:
        shutil.copy2(Path(args.amazon) / name, amazon / name)
    for name in S3REC_SETS:
        for preset, row in S3REC_ROWS:
            model, _, variant = row.partition(":")
            cfg = gk.configure("s3rec", None, str(amazon), model=model, variant=variant or None,
                               preset=preset, explicit={"data.name": name})
            ds, table = load(cfg)
            ds.embeddings()
            print(f"{name} {row}{' (paper preset)' if preset else ''}: {ds.seqs.n_items} items, "
                  f"SID levels {table.sizes}", flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(PREP / "wheels"),
           "--only-binary=:all:", "--python-version", "3.12", "--platform", "manylinux2014_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", *WHEELS]
    subprocess.run(cmd, check=True)
    size = sum(p.stat().st_size for p in PREP.rglob("*") if p.is_file())
    print(f"{PREP}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
