"""Prepare, on a machine with network and this checkout's .venv, what the GPU check needs on a
GPU machine without network (``make gpu-prep``): under ``.gpu-prep/`` (ignored by git, carried
with the working tree), ``cache/``, a GLASSKIT_CACHE holding the ml-100k files, the item
embeddings and every row's SID table at the quick profile, and ``wheels/``, the CPython 3.12
wheels of what glasskit imports beside torch on the training path (numpy, pandas, pyyaml, tqdm)
and of pytest. The GPU machine's own torch (a CUDA build) is used as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREP = ROOT / ".gpu-prep"
WHEELS = ["numpy==2.3.5", "pandas==2.3.3", "pyyaml==6.0.3", "tqdm==4.67.1", "pytest==8.4.2"]


def main() -> int:
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
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(PREP / "wheels"),
           "--only-binary=:all:", "--python-version", "3.12", "--platform", "manylinux2014_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", *WHEELS]
    subprocess.run(cmd, check=True)
    size = sum(p.stat().st_size for p in PREP.rglob("*") if p.is_file())
    print(f"{PREP}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
