"""bench/before_after.py's paired after-vs-before test over a store's per-user ranks (the
benchmark itself trains for minutes to hours)."""

import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import before_after  # noqa: E402


def _ranks(root, side, seed, users, ranks):
    run = root / side / "runs" / f"gems-full-mid-s{seed}"
    run.mkdir(parents=True)
    np.savez(run / "ranks.npz", test_users=users, test_masked=ranks, test_unmasked=ranks)


def test_after_is_tested_against_before_on_the_same_users(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(300)
    for seed in (0, 1):
        before = rng.integers(0, 21, 300)
        better = np.where(before > 1, before - 1, np.where(before == 0, rng.integers(0, 21, 300), 1))
        _ranks(tmp_path, "before", seed, users, before)
        _ranks(tmp_path, "after", seed, users, better)
    line = before_after.paired(tmp_path, "gems:full-mid", [0, 1], "masked")
    effect, p = float(line.split(" ")[0]), float(line.rsplit("p ", 1)[1])
    assert effect > 0 and p < 0.05  # every moved target moved up
    assert before_after.paired(tmp_path, "gems:full-mid", [0, 1, 2], "masked") == ""  # seed 2 lacks ranks
    _ranks(tmp_path, "before", 3, users, users % 21)
    _ranks(tmp_path, "after", 3, users[::-1], users % 21)
    assert before_after.paired(tmp_path, "gems:full-mid", [3], "masked") == "other users"
