"""bench/bench_scale.py's data and arithmetic (the benchmark itself runs for minutes to hours)."""

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_scale  # noqa: E402


def test_synthetic_data_has_kuairecs_shape(tmp_path):
    users = bench_scale.write_csv(tmp_path, 50_000)
    df = pd.read_csv(tmp_path / "interactions.csv")
    assert len(df) == pytest.approx(50_000, rel=0.02) and df["user_id"].nunique() == users
    lengths = df.groupby("user_id").size()
    assert lengths.mean() == pytest.approx(50_000 / users, rel=0.02)
    assert (df.groupby("user_id")["timestamp"].diff().dropna() > 0).all()  # time runs forward
    assert 0.6 < df["label"].mean() < 0.74 and df["item_id"].max() < bench_scale.ITEMS


def test_growth_exponent_recovers_a_power_law():
    sizes = [1e5, 1e6, 1.25e7]
    assert bench_scale.exponent(sizes, [2 * s ** 1.5 for s in sizes]) == pytest.approx(1.5)
    assert bench_scale.exponent(sizes, [7.0] * 3) == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(bench_scale.exponent(sizes[:2], [1.0, 9.0]))
