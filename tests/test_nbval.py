"""The stored smoke report (tests/nbval, made by `make nbval-refresh`) re-executes to the same
outputs under pytest --nbval. Only the fields listed in tests/nbval/sanitize.cfg are volatile:
plotly's random div ids, epoch wall times and absolute paths."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

NBVAL = ROOT / "tests" / "nbval"


@pytest.mark.slow
def test_stored_smoke_report_reproduces(tmp_path):
    books = sorted(NBVAL.glob("[0-9][0-9]_*.ipynb"))
    assert len(books) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "GLASSKIT_RUNS": str(tmp_path / "runs"), "GLASSKIT_CACHE": str(tmp_path / "cache")}
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "--nbval", "--nbval-sanitize-with",
                          str(NBVAL / "sanitize.cfg"), *map(str, books)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:]
