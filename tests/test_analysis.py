"""Analysis functions on constructed inputs whose answers are known, and the invariants of a
real decode trace."""

import numpy as np
import pandas as pd
import pytest
import torch

import glasskit as gk
from glasskit.analysis.crp import crp_table, degradation_removed, level_frame
from glasskit.analysis.streams import (
    gate_by_length,
    gate_trend,
    length_bins,
    recency_profile,
    stream_shares,
)
from glasskit.analysis.trace import decode_trace, user_view
from glasskit.pipeline import load, model_and_batcher
from glasskit.profiles import apply_variant


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def test_gate_by_length_bins_means_and_counts():
    lengths = np.array([1, 1, 2, 5, 5, 5, 70, 600])
    gates = np.array([0.1, 0.3, 0.25, 0.4, 0.5, 0.6, 0.9, 1.0])
    t = gate_by_length(lengths, gates, edges=(1, 2, 4, 64, 512)).set_index("bin")
    assert list(t.index.astype(str)) == ["1", "2-3", "4-63", "64-511", "512+"]
    assert t.loc["1", "mean_gate"] == pytest.approx(0.2) and t.loc["1", "count"] == 2
    assert t.loc["4-63", "mean_gate"] == pytest.approx(0.5) and t.loc["4-63", "count"] == 3
    assert t.loc["512+", "count"] == 1 and np.isnan(t.loc["512+", "std"])
    assert gate_trend(t.reset_index(), min_count=1) == pytest.approx(1.0)  # monotone here
    assert list(length_bins(np.array([0, 3, 9]), (1, 2, 4)).astype(str)) == ["0", "2-3", "4+"]


def test_stream_shares_weigh_each_streams_contribution():
    g = pd.DataFrame({"level": [1, 1, 2], "layer": [0, 0, 0], "gate": [0.5, 0.1, 0.2],
                      "short_norm": [1.0, 3.0, 1.0], "ret_norm": [1.0, 1.0, 0.0]})
    rows = pd.DataFrame({"level": [1, 2], "layer": [0, 0], "rows": [4, 10], "retrieving": [2, 1]})
    s = stream_shares(g, rows).set_index("level")
    assert s.loc[1, "retrieved_share"] == pytest.approx((0.5 + 0.25) / 2)
    assert s.loc[1, "retrieving_share"] == pytest.approx(0.5)
    assert s.loc[1, "retrieved_share_all_beams"] == pytest.approx(0.375 * 0.5)
    assert s.loc[2, "retrieved_share"] == 0 and s.loc[2, "beams"] == 1


def test_recency_profile_sums_over_layers_and_averages():
    r = pd.DataFrame({"stream": ["short"] * 4 + ["retrieved"], "layer": [0, 0, 1, 1, 0],
                      "age": [1, 2, 1, 2, 30], "mass": [0.6, 0.4, 0.8, 0.2, 1.0]})
    p = recency_profile(r, "short")
    assert p.loc[1] == pytest.approx(0.7) and p.loc[2] == pytest.approx(0.3)
    assert recency_profile(r, "short", layer=1).loc[1] == pytest.approx(0.8)
    assert recency_profile(r, "retrieved").to_dict() == {30: 1.0}


def _m(crp, hr=(0.5, 0.2, 0.1)):
    return {"crp": crp, "crp_eligible": [10, 5, 1], "crp_hit": [0.5, 0.2, 1.0], "hrecall": list(hr),
            "precision": [0.1, 0.2, 0.9], "acc": [0.2, 0.3, 0.9]}


def test_crp_degradation_and_the_share_hard_search_removes():
    table = crp_table({"tiger": [_m([2.0, 3.25, 3.44]), _m([2.0, 3.25, 3.44])],
                       "sidtier+shs": [_m([2.0, 2.98, 3.11]), _m([2.0, 2.98, None])]})
    t = table[table["row"] == "tiger"].set_index("level")
    assert t.loc[2, "degradation"] == pytest.approx(1.25) and t.loc[2, "crp std"] == 0
    g = table[table["row"] == "sidtier+shs"].set_index("level")
    assert g.loc[3, "crp"] == pytest.approx(3.11) and g.loc[3, "seeds"] == 2  # null ignored
    d = degradation_removed(table).set_index("level")
    assert d.loc[2, "share removed"] == pytest.approx(1 - 0.98 / 1.25)  # GLASS: 22%
    assert d.loc[3, "share removed"] == pytest.approx(1 - 0.13 / 0.19)  # GLASS: 31%
    flat = level_frame([_m([3.0, 2.0, 2.0])])
    assert flat.loc[1, "degradation"] == -1.0
    assert np.isnan(degradation_removed(crp_table({"tiger": [_m([3.0, 2.0, 2.0])],
                                                   "sidtier+shs": [_m([3.0, 2.5, 2.0])]}))
                    .set_index("level").loc[2, "share removed"])


def test_decode_trace_masses_and_gates_are_consistent():
    cfg = apply_variant(gk.profile("smoke"), "sidtier+shs")
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    index = table.index()
    tr = decode_trace(model, batcher, index, "test", beam=20, batch_size=24)
    assert batcher.detail is False and model.inspect is None  # left as found
    g = tr.gates
    assert len(g) > 0 and g["gate"].between(0, 1).all() and (g["ret_len"] > 0).all()
    assert set(g["level"]) == set(range(1, table.levels))  # hard search from the second level
    r = tr.recency
    for layer in range(cfg.model.dec_layers):  # attention sums to one per beam in each stream
        short = r[(r["layer"] == layer) & r["stream"].isin(["short", "tier"])]["mass"].sum()
        assert short == pytest.approx(1.0, abs=1e-4)
        ret = r[(r["layer"] == layer) & (r["stream"] == "retrieved")]["mass"].sum()
        assert ret == pytest.approx(1.0, abs=1e-4)
    assert (r[r["stream"] == "retrieved"]["age"] > cfg.data.short_len).all()  # long history only
    assert (r[r["stream"] == "short"]["age"] <= cfg.data.short_len).all()
    rows = tr.rows.set_index(["level", "layer"])
    assert (rows["retrieving"] <= rows["rows"]).all()

    u = int(np.argmax(ds.seqs.lengths))
    view = user_view(model, batcher, index, u, ds.texts(), "test", beam=20)
    assert len(view["window"]) == min(cfg.data.short_len, int(ds.splits["test"].t[u]))
    assert len(view["beams"]) == min(20, table.sizes[0]) and view["beams"]["gate"].between(0, 1).all()
    ret = view["retrieved"]
    assert len(ret) == view["beams"]["retrieved"].sum()
    for _, b in view["beams"].iterrows():  # retrieved items share the beam's first code
        items = ret[ret["beam"] == b["beam"]]["item"]
        assert (table.first[items.to_numpy()] == b["first_code"]).all()
        if len(items):
            assert ret[ret["beam"] == b["beam"]]["attention"].sum() == pytest.approx(1.0, abs=1e-4)
