import json

import pytest

import glasskit as gk
from glasskit import io
from glasskit.errors import GlasskitError
from glasskit.runs import Run, create_run, list_runs, run_name


def test_create_log_and_list(tmp_path):
    cfg = gk.profile("smoke")
    run = create_run(cfg, "tiger", root=tmp_path)
    run.log_metrics(valid={"ndcg@10": 0.25}, epochs=3)
    run.log_metrics(test={"ndcg@10": 0.2})
    assert run.config == cfg
    df = list_runs(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["kind"] == "tiger" and row["valid/ndcg@10"] == 0.25 and row["test/ndcg@10"] == 0.2
    with pytest.raises(GlasskitError, match="run exists"):
        create_run(cfg, "tiger", root=tmp_path)


def test_run_name_says_which_file_of_a_multi_file_dataset():
    cfg = gk.profile("s3rec", **{"data.name": "Sports and Outdoors"})
    assert run_name(cfg, "tiger", "1ed4147").startswith("tiger-s3rec-Sports_and_Outdoors-")
    assert run_name(gk.profile("smoke"), "tiger").startswith("tiger-synthetic-")


def test_crash_while_writing_metrics_keeps_the_old_file(tmp_path, monkeypatch):
    run = create_run(gk.profile("smoke"), "tiger", root=tmp_path)
    run.log_metrics(epochs=1)

    def explode(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(io.json, "dumps", explode)
    with pytest.raises(RuntimeError):
        run.log_metrics(epochs=2)
    monkeypatch.undo()
    assert json.loads((run.path / "metrics.json").read_text()) == {"epochs": 1}
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []


def test_crash_while_creating_a_run_leaves_earlier_runs(tmp_path, monkeypatch):
    cfg = gk.profile("smoke")
    first = create_run(cfg, "tiger", root=tmp_path)
    first.log_metrics(ok=1)

    def explode(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(io.json, "dumps", explode)
    with pytest.raises(RuntimeError):
        create_run(cfg, "tiger", root=tmp_path, overwrite=True)
    with pytest.raises(RuntimeError):
        create_run(cfg.replace(seed=1), "tiger", root=tmp_path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [first.path]
    assert Run(first.path).metrics() == {"ok": 1}
    assert len(list_runs(tmp_path)) == 1


def test_not_a_run(tmp_path):
    with pytest.raises(GlasskitError, match="not a run directory"):
        Run(tmp_path)
    assert list_runs(tmp_path / "none").empty
