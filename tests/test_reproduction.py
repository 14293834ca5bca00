"""Notebook 07 and its table: published figures beside glasskit's (issue 21)."""

import json

import numpy as np
import pytest
from conftest import write

import glasskit as gk
from glasskit.analysis.reproduction import (
    PUBLISHED,
    collision_baselines,
    content_ties,
    long_history_reach,
    reproduction_table,
    validation_to_test,
)
from glasskit.notebook import read_records
from glasskit.pipeline import load
from glasskit.reports import NotebookFailed, build_reports, find_notebooks
from glasskit.runs import create_run
from glasskit.tokenize import SidTable, resolve_collisions


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


MINI = "1 1 2 3 4 5\n2 4 5 6 7 8 12\n3 9 10 11 12 4 5 2\n"  # test targets 5, 12, 2


def _mini(tmp_path, monkeypatch, sequences=MINI, attributes=None, model="tiger", variant=None,
          **overrides):
    """A 12-item S3-Rec set (attributes: item id mod 4 unless given) and its loaded dataset and
    SID table (RQ-KMeans [3, 2] plus a collision level)."""
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "s3rec"
    write(d / "Mini.txt", sequences)
    attributes = attributes or {str(i): [i % 4] for i in range(1, 13)}
    write(d / "Mini_item2attributes.json", json.dumps(attributes))
    return load(gk.configure("s3rec", data_dir=str(d), model=model, variant=variant,
                             **{"data.name": "Mini", "embed.dim": 4, "tokenizer.method": "rqkmeans",
                                "tokenizer.codebooks": [3, 2], **overrides}))


def test_content_ties_count_items_their_attributes_do_not_tell_apart(tmp_path, monkeypatch):
    attrs = {str(i): [1, 2, 10 + i % 3] for i in range(1, 12)}  # groups {1,4,7,10} {2,5,8,11} {3,6,9}
    attrs["12"] = [7]  # and item 12 alone
    ds, table = _mini(tmp_path, monkeypatch, attributes=attrs)
    t = content_ties(ds, table)
    content = t.loc["content (item text)"]
    assert content["groups"] == 4 and content["largest group"] == 4 and content["items"] == 12
    assert content["items sharing it"] == pytest.approx(11 / 12)
    assert content["test targets sharing it"] == pytest.approx(2 / 3)
    assert content["median group of a test target"] == 4
    # equal embeddings get equal semantic codes: no fewer ties than the content has
    codes = t.loc["semantic codes"]
    assert codes["groups"] <= 4 and codes["items sharing it"] >= 11 / 12
    assert table.codes.shape[1] == table.semantic_levels + 1  # the collision level separates them
    assert len({tuple(c) for c in table.codes}) == 12


def test_collision_baselines_name_the_target_without_its_history(tmp_path, monkeypatch):
    """Hand-counted: test targets 5, 12, 2; training interactions (all but each user's last
    two) 1 2 3 | 4 5 6 7 | 9 10 11 12 4, so item 4 twice, item 8 never, the rest once. Groups
    (one semantic level) A {1,4,7,10}, B {2,5,8,11}, C {3,6,9}, D {12}; the collision level
    numbers a group's items in item order."""
    ds, tokenized = _mini(tmp_path, monkeypatch)
    group = {**dict.fromkeys([1, 4, 7, 10], 0), **dict.fromkeys([2, 5, 8, 11], 1),
             **dict.fromkeys([3, 6, 9], 2), 12: 3}
    semantic = np.array([[group[int(i)]] for i in ds.seqs.item_ids])
    codes, extra = resolve_collisions(semantic, "dedup")
    table = SidTable(codes=codes, sizes=[4, extra], semantic_levels=1, codebooks=[np.eye(4)],
                     method="hand", collisions="dedup", recon_error=0.0)
    b = collision_baselines(ds, table)
    assert b["test targets"] == 3
    # 5: B's most trained are 2, 5, 11 (once each; 8 never), so 1/3; 12: alone, 1; 2: 1/3
    assert b["most trained item of the group"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert b["collision index 0"] == pytest.approx(2 / 3)  # 12 and 2 come first in their groups
    assert b["uniform within the group"] == pytest.approx((1 / 4 + 1 + 1 / 4) / 3)
    kept = SidTable(codes=semantic, sizes=[4], semantic_levels=1, codebooks=[np.eye(4)],
                    method="hand", collisions="keep", recon_error=0.0)
    with pytest.raises(ValueError, match="collision level"):
        collision_baselines(ds, kept)
    assert collision_baselines(ds, tokenized)["test targets"] == 3


def test_validation_to_test_splits_the_drop_by_the_targets_training_interactions(tmp_path, monkeypatch):
    """Hand-counted: training interactions (all but each user's last two) 1 2 3 | 4 5 6 7 |
    9 10 11 12 4 | 2 6 1, so items 1, 2, 4 and 6 twice, 8 never, the rest once. Validation
    targets 4 8 5 4 (buckets >=2, <2, <2, >=2), test targets 5 12 2 9 (<2, <2, >=2, <2)."""
    ds, _ = _mini(tmp_path, monkeypatch, MINI + "4 2 6 1 4 9\n")
    users = np.array([3, 2, 1, 0])  # any order: results are matched to the split by user
    ranks = {"valid_users": users, "valid_unmasked": np.array([15, 3, 0, 1]),  # hits 0 1 0 1
             "test_users": users, "test_unmasked": np.array([11, 5, 0, 2])}  # hits 0 1 0 1
    t = validation_to_test(ds, ranks, "hit@10", edges=(2,))
    assert list(t.index) == ["< 2", ">= 2", "all", "test at the validation mix"]
    assert list(t["valid share"][:2]) == [0.5, 0.5] and list(t["test share"][:2]) == [0.75, 0.25]
    assert list(t["valid hit@10"][:3]) == [0.5, 0.5, 0.5]
    assert t["test hit@10"].tolist()[:3] == pytest.approx([1 / 3, 1.0, 0.5])
    # the test buckets at the validation mix: 0.5 * 1/3 + 0.5 * 1
    assert t.loc["test at the validation mix", "test hit@10"] == pytest.approx(2 / 3)
    assert t["test / valid"].tolist() == pytest.approx([2 / 3, 2.0, 1.0, 4 / 3])
    with pytest.raises(ValueError, match="valid_masked"):
        validation_to_test(ds, ranks, ranking="masked")
    for edges in ((), (20, 5), (0, 5)):
        with pytest.raises(ValueError, match="edges"):
            validation_to_test(ds, ranks, edges=edges)
    with pytest.raises(ValueError, match="other data"):
        validation_to_test(ds, {**ranks, "test_users": np.array([7, 2, 1, 0])})


def test_long_history_reach_counts_what_glass_can_search(tmp_path, monkeypatch):
    """Hand-counted on three users with a 4-item short window: user 1's history before its test
    target fits the window; user 2 has [4] beyond it, user 3 [9, 10]."""
    ds, table = _mini(tmp_path, monkeypatch, model="glass", variant="sidtier+shs",
                      **{"data.short_len": 4})
    reach = long_history_reach(ds, table)
    assert reach["test users"] == 3 and reach["short window"] == 4
    assert reach["users with a long history"] == pytest.approx(2 / 3)
    assert reach["mean long history"] == pytest.approx(1.0)
    first = table.first[np.searchsorted(ds.seqs.item_ids, np.arange(1, 13))]  # by original id
    retrieved = [0, int(first[4 - 1] == first[12 - 1]),
                 int(first[9 - 1] == first[2 - 1]) + int(first[10 - 1] == first[2 - 1])]
    assert reach["mean retrieved"] == pytest.approx(np.mean(retrieved))
    assert reach["search retrieves nothing"] == pytest.approx(np.mean([r == 0 for r in retrieved]))


def test_notebook_07_is_left_out_of_the_main_command_unless_named():
    assert "07_reproduction.ipynb" not in [p.name for p in find_notebooks()]
    assert [p.name for p in find_notebooks(only=["07"])] == ["07_reproduction.ipynb"]


@pytest.mark.slow
def test_notebook_07_on_smoke_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    build_reports({"profile": "smoke"}, tmp_path / "out", only=["07"],
                  per_notebook={"07": {"seeds": [0, 1], "ablation_seeds": [0]}})
    rec = read_records(tmp_path / "out" / "07_reproduction.ipynb")
    assert rec["rows"] == ["sasrec", "tiger", "tiger [embed.method=interactions]"]
    table = rec["reproduction synthetic"]
    assert set(table) == {f"{row} {m}" for row in rec["rows"]
                          for m in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}
    assert all(v["paper"] is None and 0 <= v["glasskit"] <= 1 for v in table.values())
    assert {row: table[f"{row} ndcg@10"]["seeds"] for row in rec["rows"]} == {
        "sasrec": 2, "tiger": 2, "tiger [embed.method=interactions]": 1}  # ablation_seeds apart
    ties = {k.split(" / ", 1)[1]: v for k, v in rec.items() if k.startswith("content ties")}
    assert set(ties) == {f"{row} / {key}" for row in ("tiger", "tiger [embed.method=interactions]")
                         for key in ("content (item text)", "semantic codes")}
    assert all(0 <= v["items sharing it"] <= 1 and v["groups"] <= v["items"] for v in ties.values())
    reach = rec["long history synthetic"]  # smoke histories run far past the 10-item window
    assert reach["users with a long history"] == 1 and reach["mean retrieved"] > 0
    collision = {k.split(" / ", 1)[1]: v for k, v in rec.items() if k.startswith("collision level")}
    assert set(collision) == {"tiger", "tiger [embed.method=interactions]"}
    for v in collision.values():
        assert 0 <= v["collision index 0"] <= 1 and 0 < v["uniform within the group"] <= 1
        assert 0 <= v["most trained item of the group"] <= 1
        assert 0 <= v["TIGER (teacher-forced)"] <= 1
    drop = {k.split(" / ", 1)[1]: v for k, v in rec.items() if k.startswith("validation to test")}
    assert set(drop) == set(rec["rows"])
    for v in drop.values():
        assert 0 <= v["all"]["test hit@10"] <= 1 and v["all"]["valid share"] == 1


def test_notebook_07_refuses_seeds_for_a_set_it_does_not_train(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    with pytest.raises(NotebookFailed, match="GlasskitError: set_seeds names \\['Sports_and_Outdoors'\\]"):
        build_reports({"profile": "smoke"}, tmp_path / "out", only=["07"],
                      per_notebook={"07": {"set_seeds": {"Sports_and_Outdoors": [0]}}})
    assert not list((tmp_path / "runs").glob("*/metrics.json"))  # refused before any training
