"""Notebook 07 and its table: published figures beside glasskit's (issue 21)."""

import numpy as np
import pytest

import glasskit as gk
from glasskit.analysis.reproduction import PUBLISHED, reproduction_table
from glasskit.notebook import read_records
from glasskit.reports import build_reports, find_notebooks
from glasskit.runs import create_run


def _run(root, model, variant, seed, hit10):
    cfg = gk.configure("s3rec", seed=seed, model=model, variant=variant)
    run = create_run(cfg, model, root=root, data_fingerprint="f" * 16)
    test = {r: {"hit@5": hit10 / 2, "ndcg@5": hit10 / 3, "hit@10": hit10, "ndcg@10": hit10 / 2}
            for r in ("masked", "unmasked")}
    test["masked"] = {k: v * 2 for k, v in test["masked"].items()}  # the table reads unmasked
    run.log_metrics(primary="unmasked", test=test)
    return run


def test_table_puts_the_paper_beside_each_row_with_the_ratio(tmp_path):
    runs = {"tiger": [_run(tmp_path, "tiger", None, s, h) for s, h in ((0, 0.06), (1, 0.08))],
            "sidtier+shs": [_run(tmp_path, "glass", "sidtier+shs", 0, 0.05)]}
    t = reproduction_table(runs, "Toys_and_Games")
    r = t.loc[("tiger", "recall@10")]
    assert r["paper"] == PUBLISHED["Toys_and_Games"]["tiger"]["hit@10"] == 0.0712
    assert r["glasskit"] == pytest.approx(0.07) and r["seeds"] == 2
    assert r["std"] == pytest.approx(np.std([0.06, 0.08], ddof=1), abs=1e-4)
    assert r["ratio"] == pytest.approx(round(0.07 / 0.0712, 4), abs=1e-4)
    assert np.isnan(t.loc[("sidtier+shs", "recall@10"), "paper"])  # the paper has no GLASS row
    assert np.isnan(reproduction_table(runs, "Beauty").loc[("tiger", "ndcg@5"), "paper"])


def test_notebook_07_is_left_out_of_the_main_command_unless_named():
    assert "07_reproduction.ipynb" not in [p.name for p in find_notebooks()]
    assert [p.name for p in find_notebooks(only=["07"])] == ["07_reproduction.ipynb"]


@pytest.mark.slow
def test_notebook_07_on_smoke_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    build_reports({"profile": "smoke"}, tmp_path / "out", only=["07"])
    rec = read_records(tmp_path / "out" / "07_reproduction.ipynb")
    assert rec["rows"] == ["sasrec", "tiger", "tiger [embed.method=interactions]"]
    table = rec["reproduction synthetic"]
    assert set(table) == {f"{row} {m}" for row in rec["rows"]
                          for m in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}
    assert all(v["paper"] is None and 0 <= v["glasskit"] <= 1 for v in table.values())
