"""The ablation dashboard's logic, driven by setting widget values as a user would."""

import time

import numpy as np
import pytest

import glasskit as gk
from glasskit.runs import create_run
from glasskit.widgets import AblationDashboard


def _run(root, variant, seed, ndcg, hit):
    cfg = gk.configure("smoke", seed=seed, variant=variant) if variant else gk.configure("smoke", seed=seed)
    run = create_run(cfg, cfg.model.name, root=root, data_fingerprint="f" * 16)
    test = {r: {"ndcg@10": ndcg * (1 if r == "masked" else 2), "hit@10": hit, "acc": [0.1]}
            for r in ("masked", "unmasked")}
    run.log_metrics(primary="masked", test=test, train_seconds=1.0)
    return run


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    _run(root, None, 0, 0.10, 0.2)
    _run(root, None, 1, 0.20, 0.4)
    _run(root, "sidtier+shs", 0, 0.30, 0.5)
    return root


def test_controls_drive_the_table_and_chart(store):
    dash = AblationDashboard(root=store, profile="smoke", seeds=(0, 1, 2))
    assert dash.dataset.value == "synthetic" and dash.metric.value == "ndcg@10"
    t = dash.table.set_index("row")
    assert list(t.index) == ["tiger", "sidtier+shs"]  # +cr is selected but has no run yet
    assert t.loc["tiger", "ndcg@10"] == pytest.approx(0.15) and t.loc["tiger", "seeds"] == 2
    assert t.loc["tiger", "ndcg@10 std"] == pytest.approx(np.std([0.1, 0.2], ddof=1))
    assert "0.1500 ± 0.0707" in dash.table_html.value
    assert "6 (row, seed) pair(s) not trained yet" in dash.table_html.value

    dash.metric.value = "hit@10"
    assert dash.table.set_index("row").loc["tiger", "hit@10"] == pytest.approx(0.3)
    assert list(dash.figure.data[0].y) == pytest.approx([0.3, 0.5])
    dash.metric.value = "ndcg@10"
    dash.ranking.value = "unmasked"
    assert dash.table.set_index("row").loc["tiger", "ndcg@10"] == pytest.approx(0.3)
    assert "unmasked" in dash.figure.layout.title.text
    dash.rows.value = ("tiger",)
    assert list(dash.table["row"]) == ["tiger"]
    assert [(r.label, s) for r, s in dash.missing()] == [("tiger", 2)]


def test_train_button_trains_the_missing_pairs_and_refreshes(store):
    dash = AblationDashboard(root=store, profile="smoke", seeds=(0, 1, 2))
    dash.rows.value = ("tiger",)
    todo = dash.train_missing(wait=True)
    assert [(r.label, s) for r, s in todo] == [("tiger", 2)]
    assert dash.status.value == "trained 1 run(s)", dash.status.value
    assert dash.table.set_index("row").loc["tiger", "seeds"] == 3  # the landed run is shown
    assert dash.progress.value == dash.progress.max and dash.missing() == []
    assert not dash.train_button.disabled and dash.cancel_button.disabled
    assert dash.train_missing() == [] and "nothing to train" in dash.status.value


def test_cancel_stops_training_at_once(store):
    dash = AblationDashboard(root=store, profile="smoke", seeds=(0, 1, 2))
    dash.rows.value = ("sidtier+shs+cr",)
    dash.train_missing()
    assert dash.train_button.disabled and not dash.cancel_button.disabled
    time.sleep(1.0)
    dash.cancel()
    dash._worker.join(timeout=60)
    assert not dash._worker.is_alive()
    assert dash.status.value.startswith("cancelled after 0 run(s)")
    assert len(dash.missing()) == 3 and not dash.train_button.disabled


def test_dashboard_shows_the_converge_budget_by_default_once_its_runs_exist(store):
    """Issue 20, 5: with no profile named the dashboard shows the comparison's shared budget
    when the store has runs of it, and the quick demonstration otherwise."""
    assert AblationDashboard(root=store, live=False).profile == "quick"
    cfg = gk.configure("converge", seed=0, model="sasrec")
    run = create_run(cfg, "sasrec", root=store, data_fingerprint="c" * 16)
    run.log_metrics(primary="masked", test={r: {"ndcg@10": 0.07, "hit@10": 0.12, "acc": []}
                                            for r in ("masked", "unmasked")}, train_seconds=1.0)
    dash = AblationDashboard(root=store, live=False, default_rows=("sasrec",))
    assert dash.profile == "converge" and dash.dataset.value == "ml-100k"
    assert list(dash.table["row"]) == ["sasrec"]  # the smoke runs are not mixed in
    assert dash.table.set_index("row").loc["sasrec", "ndcg@10"] == pytest.approx(0.07)
    assert AblationDashboard(root=store, profile="smoke", live=False).profile == "smoke"


def test_dashboard_reads_the_committed_comparison_beside_the_run_store(store, tmp_path, monkeypatch):
    """`make compare` trains into results/runs, which is committed: with no store named, the
    dashboard shows those runs too, and still trains into the run store."""
    results = tmp_path / "results" / "runs"
    cfg = gk.configure("converge", seed=0, model="sasrec")
    run = create_run(cfg, "sasrec", root=results, data_fingerprint="c" * 16)
    run.log_metrics(primary="masked", test={r: {"ndcg@10": 0.07, "hit@10": 0.12, "acc": []}
                                            for r in ("masked", "unmasked")}, train_seconds=1.0)
    monkeypatch.setattr("glasskit.widgets.runs_root", lambda: store)
    monkeypatch.setenv("GLASSKIT_RESULTS", str(results))  # the tests' own results/runs
    dash = AblationDashboard(live=False, default_rows=("sasrec",))
    assert dash.profile == "converge" and dash.root == store
    assert [r.path for r in dash.runs] == [run.path]
    assert len(AblationDashboard(live=False, profile="smoke").runs) == 3  # the store's own
    assert AblationDashboard(root=store, live=False).profile == "quick"  # a named store alone
