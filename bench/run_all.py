"""Run every benchmark in bench/ (``make bench``)."""

import runpy
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
only = set(sys.argv[1:])
for path in sorted(here.glob("bench_*.py")):
    if only and path.stem not in only:
        continue
    print(f"== {path.stem}", flush=True)
    runpy.run_path(str(path), run_name="__main__")
