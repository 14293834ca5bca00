"""Comparisons a reviewer would accept (issue 20): per-user results kept with every run, budgets
in every table, paired tests against a reference row, the shared convergence budget."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import glasskit as gk
from glasskit.analysis.run_tables import markdown, seed_table, significance_table
from glasskit.analysis.significance import per_user_metric
from glasskit.config import TrainConfig
from glasskit.device import machine_name
from glasskit.errors import ConfigError, GlasskitError
from glasskit.pipeline import load
from glasskit.train import _schedule, train, train_precision, warmup_length
from glasskit.widgets import AblationDashboard

ROWS = [("tiger", None), ("glass", "sidtier+shs"), ("sasrec", None)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two seeds of three smoke rows, trained once for the module."""
    root = tmp_path_factory.mktemp("runs")
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSKIT_RUNS", str(root))
        for seed in (0, 1):
            for model, variant in ROWS:
                cfg = gk.configure("smoke", seed=seed, model=model, variant=variant,
                                   **{"train.epochs": 2})
                runs.append(train(cfg, progress=False))
    return root, runs


def test_every_run_keeps_each_users_target_rank_matching_its_metrics(store):
    _, runs = store
    for run in runs:
        m, ranks = run.metrics(), run.ranks()
        ds, _ = load(run.config)
        for split in ("valid", "test"):
            assert ranks[f"{split}_users"].tolist() == ds.splits[split].user.tolist()
            for ranking in ("masked", "unmasked"):
                r = ranks[f"{split}_{ranking}"]
                assert r.dtype == np.int32 and r.min() >= 0 and r.max() <= 20
                for k in ("hit@10", "ndcg@10", "ndcg@20"):
                    assert per_user_metric(r, k).mean() == pytest.approx(m[split][ranking][k])


def test_budget_is_recorded_and_tabulated(store):
    _, runs = store
    for run in runs:
        m, cfg = run.metrics(), run.config
        ds, _ = load(cfg)
        if cfg.model.name == "sasrec":  # windows over every training position
            per_epoch = sum(np.maximum(ds.seqs.lengths - 3, 0))
        else:
            per_epoch = len(ds.splits["train"])
        assert m["train_targets"] == per_epoch * m["epochs_run"]
        assert m["parameters"] > 1000 and m["best_epoch"] <= m["epochs_run"]
    table = seed_table(runs)
    text = markdown(table)
    for col in ("epochs", "best epoch", "train targets", "train s", "device", "parameters"):
        assert f" {col} |" in text
    assert "| cpu |" in text


def test_paired_tests_against_a_reference_row(store):
    _, runs = store
    tests = significance_table(runs, "tiger")
    label = {r.split(" [")[0]: r for r in tests.index.get_level_values("row")}  # + [train.epochs=2]
    assert set(label) == {"sidtier+shs", "sasrec"}
    for _, t in tests.iterrows():
        assert t["ci low"] <= t["effect"] <= t["ci high"] and 0 <= t["p"] <= t["p holm"] <= 1
        assert t["seeds"] == 2 and t["users"] == 64 and 0 <= t["seeds agree"] <= 2
    # the effect is the mean per-user difference, which is the difference of the mean metrics
    table = seed_table(runs, keys=("ndcg@10",))
    tiger = tests.attrs["reference"]["synthetic"]
    diff = (table.loc[("synthetic", label["sasrec"]), "ndcg@10"]
            - table.loc[("synthetic", tiger), "ndcg@10"])
    assert tests.loc[("synthetic", label["sasrec"]), "effect"] == pytest.approx(diff)
    text = markdown(table, ("ndcg@10",), tests=tests)
    assert "Δndcg@10 vs tiger [95% CI]" in text and "(reference)" in text
    sasrec = tests.loc[("synthetic", label["sasrec"])]
    assert f"({sasrec['seeds agree']}/2 seeds)" in text
    with pytest.raises(GlasskitError, match="no such row"):
        significance_table(runs, "intrr")


def test_against_names_a_row_whatever_its_preset_and_settings(store, monkeypatch):
    """A sweep at --preset paper labels its rows ``sasrec (paper preset)``: ``--against sasrec``
    must still find its reference (the GPU run's table came back without its tests)."""
    from glasskit.analysis import run_tables

    assert run_tables.row_name("sasrec (paper preset) [train.epochs=2]") == "sasrec"
    assert run_tables.row_name("sidtier+shs (glass, switches off)") == "sidtier+shs (glass, switches off)"
    _, runs = store
    grouped = run_tables.group_runs

    def as_paper_preset(*args, **kwargs):
        return {(d, lab.replace(" [", " (paper preset) [")): v
                for (d, lab), v in grouped(*args, **kwargs).items()}

    monkeypatch.setattr(run_tables, "group_runs", as_paper_preset)
    tests = significance_table(runs, "tiger")
    assert tests.attrs["reference"]["synthetic"].startswith("tiger (paper preset)")
    assert len(tests) == 2 and (tests["users"] == 64).all()


def test_compare_against_on_the_command_line(store):
    _, runs = store
    res = subprocess.run([sys.executable, "-m", "glasskit", "compare", *map(str, (r.path for r in runs)),
                          "--against", "sasrec", "--metric", "hit@10"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Δhit@10 vs sasrec [95% CI]" in res.stdout and "p (Holm)" in res.stdout


def test_a_run_finished_before_ranks_were_kept_is_evaluated_again(store, monkeypatch):
    root, runs = store
    monkeypatch.setenv("GLASSKIT_RUNS", str(root))
    run = runs[0]
    before = run.metrics()["test"]
    (run.path / "ranks.npz").unlink()
    with pytest.raises(GlasskitError, match="no per-user results"):
        run.ranks()
    again = train(run.config, progress=False)
    assert again.path == run.path and (run.path / "ranks.npz").is_file()
    assert again.metrics()["test"] == before


def test_dashboard_tests_rows_against_the_reference(store):
    root, _ = store
    dash = AblationDashboard(root=root, profile="smoke", seeds=(0, 1), live=False)
    dash.rows.value = dash.rows.options  # every row in the store
    dash.against.value = tiger = next(o for o in dash.against.options if o.startswith("tiger ["))
    assert f"Δ vs {tiger} [95% CI]" in dash.table_html.value and "p (Holm)" in dash.table_html.value
    t = dash.table.set_index("row")
    assert t["effect"].isna().sum() == 1 and np.isnan(t.loc[tiger, "effect"])
    assert (t["train targets"] > 0).all()
    assert dash.table_html.value.count("/2 seeds)") == len(t) - 1  # retraining's agreement
    dash.against.value = "(none)"
    assert "Δ vs" not in dash.table_html.value


def test_sweep_trains_resumably_and_writes_its_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "comparison.md"
    argv = [sys.executable, "-m", "glasskit", "sweep", "--profile", "smoke", "--datasets", "synthetic",
            "--seeds", "0", "--rows", "tiger,sasrec", "--against", "tiger", "--out", str(out), "--quiet"]
    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "[2/2] synthetic seed 0 sasrec" in res.stdout
    text = out.read_text()
    assert "2/2 runs finished (store runs;" in text and "#### masked, against tiger" in text
    cpu, amp = torch.device("cpu"), gk.profile("smoke").train.amp  # smoke trains in fp32
    assert f"processors: {machine_name(cpu)}, {train_precision(cpu, amp)} (2 runs)" in text
    mtime = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/best.pt")}
    assert subprocess.run(argv, capture_output=True, text=True).returncode == 0  # reuses both runs
    assert {p: p.stat().st_mtime for p in mtime} == mtime
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    res = subprocess.run([*argv[:-2], str(mine)], capture_output=True, text=True)
    assert res.returncode != 0 and "is not a table a sweep wrote" in res.stderr
    assert mine.read_text() == "my notes\n"
    other = tmp_path / "other.md"
    for against, bad in (("sasrec,intrr", "intrr"), ("tiger:x", "tiger:x")):  # not a row: refused
        res = subprocess.run([*argv[:argv.index("--against") + 1], against, "--out", str(other)],
                             capture_output=True, text=True)
        assert res.returncode == 2 and f"--against {bad}: not a row of this sweep" in res.stderr
        assert "(tiger, sasrec)" in res.stderr
    assert not other.exists() and len(list((tmp_path / "runs").glob("*/best.pt"))) == 2


def test_a_sweeps_tables_hold_the_finished_runs_ahead_of_it(store, tmp_path, monkeypatch, capsys):
    """Runs finished ahead of a sweep's position (by an earlier sweep, or trained out of order)
    are in its tables from the first one it writes, and its header counts them: a sweep that
    had reached 25 of 42 runs once said "25/42 runs finished" when 32 were."""
    import shutil

    import glasskit.train as training
    from glasskit.cli import main

    shutil.copytree(store[0], tmp_path / "runs")  # the module's store stays as it is
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    out, tables, real = tmp_path / "comparison.md", [], training.train

    def train_and_read_the_tables(cfg, **kwargs):
        tables.append(out.read_text() if out.exists() else None)
        return real(cfg, **kwargs)

    monkeypatch.setattr(training, "train", train_and_read_the_tables)
    argv = ["sweep", "--profile", "smoke", "--seeds", "0", "--rows", "intrr,tiger,sasrec",
            "--set", "train.epochs=2", "--against", "tiger", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = tables[1]  # written after the first run, intrr, the one run trained here
    assert tables[0] is None and "3/3 runs finished" in first
    assert "#### masked, against tiger" in first and "| sasrec [" in first
    assert len(list((tmp_path / "runs").glob("intrr-*/best.pt"))) == 1
    trained = sorted((tmp_path / "runs").glob("*/best.pt"))
    assert len(trained) == len(list(store[0].glob("*/best.pt"))) + 1

    both = tmp_path / "both-seeds.md"  # --tables-only: the tables of what is finished, no training
    argv[argv.index("--seeds") + 1] = "0,1"
    argv[argv.index("--out") + 1] = str(both)
    assert main([*argv, "--tables-only"]) == 0
    text = both.read_text()
    assert "5/6 runs finished" in text and "/2 seeds)" in text  # sasrec against tiger, 2 seeds
    assert "not yet: synthetic seed 1 intrr" in capsys.readouterr().out
    assert sorted((tmp_path / "runs").glob("*/best.pt")) == trained
    argv[argv.index("--rows") + 1], argv[argv.index("--against") + 1] = "dualgr", ""
    argv[argv.index("--out") + 1] = str(none := tmp_path / "none.md")
    assert main([*argv, "--tables-only"]) == 2 and not none.exists()
    assert "none of the sweep's 2 runs is finished" in capsys.readouterr().err


def test_converge_profile_is_one_budget_for_every_model():
    cfgs = {m: gk.configure("converge", model=m) for m in ("tiger", "glass", "sasrec", "dualgr",
                                                            "gems", "intrr")}
    for name, cfg in cfgs.items():
        assert cfg.data.train_targets_per_user is None, name  # every training position
        assert (cfg.train.epochs, cfg.train.patience, cfg.train.schedule) == (200, 10, "constant")
        assert cfg.train.warmup_epochs == 0.5, name  # the same share of training targets
    assert cfgs["sasrec"].model.train_on == "all"
    # a SASRec step predicts every position of its windows: kept to ~800 positions, so that an
    # epoch is ~100 steps and 10 epochs of patience outlast validation noise
    assert cfgs["sasrec"].train.batch_size * cfgs["sasrec"].model.max_len <= 1000
    assert [_schedule(s, 10, 100, "constant") for s in (0, 9, 10, 99, 500)] == [0.1, 1.0, 1.0, 1.0, 1.0]
    assert _schedule(99, 10, 100) < 0.01  # cosine decays to the cap
    # a setting added later leaves the names of earlier runs alone at its default
    quick = gk.configure("quick", model="tiger")
    d = quick.to_dict()
    for section, key in (("train", "schedule"), ("train", "ranking"), ("train", "warmup_epochs"),
                         ("data", "name")):
        del d[section][key]
    del d["preset"]
    payload = json.dumps({k: d[k] for k in sorted(d)}, sort_keys=True, separators=(",", ":"))
    assert quick.hash() == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert quick.hash() != quick.replace(**{"train.schedule": "constant"}).hash()
    assert quick.hash() != quick.replace(**{"train.warmup_epochs": 0.5}).hash()
    intrr = gk.configure("quick", model="intrr")
    d = intrr.to_dict()
    for section, key in (("train", "schedule"), ("train", "ranking"), ("train", "warmup_epochs"),
                         ("data", "name"), ("model", "align_items")):
        del d[section][key]
    del d["preset"]
    payload = json.dumps({k: d[k] for k in sorted(d)}, sort_keys=True, separators=(",", ":"))
    assert intrr.hash() == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert intrr.hash() != intrr.replace(**{"model.align_items": "batch"}).hash()


def test_warmup_in_epochs_covers_the_same_training_targets_for_sasrec_and_a_sid_model(tmp_path,
                                                                                     monkeypatch):
    """A SASRec step predicts a batch of whole windows, a SID model's one target per sample: a
    warmup counted in steps lasts many SASRec epochs (on ml-100k, 200 steps were 20 of them and
    its converge run stopped under-trained); counted in epochs, it is the same share for both."""
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    assert warmup_length(gk.configure("smoke").train, 7) == 10  # warmup_steps when unset
    assert [warmup_length(TrainConfig(warmup_epochs=w), 10) for w in (0.5, 0.01, 2)] == [5, 1, 20]
    with pytest.raises(ConfigError, match="would have no effect"):  # not silently ignored
        gk.configure("converge", model="sasrec", **{"train.warmup_steps": 50})
    with pytest.raises(ConfigError, match="would have no effect"):  # nor through profile()
        gk.profile("s3rec", **{"train.warmup_steps": 50})
    assert gk.profile("quick", **{"train.warmup_steps": 7}).train.warmup_steps == 7
    steps = gk.configure("converge", explicit={"train.warmup_steps": 50, "train.warmup_epochs": None})
    assert warmup_length(steps.train, 10) == 50
    for bad in (0, -1, float("nan"), "half"):
        with pytest.raises(ConfigError, match="train.warmup_epochs"):
            TrainConfig(warmup_epochs=bad).validate()

    def first_epoch_lr(model, **kw):
        cfg = gk.configure("smoke", model=model, **{"train.epochs": 2, "train.patience": 2,
                                                    "train.lr": 1e-3, "train.schedule": "constant",
                                                    **kw})
        run = train(cfg, out=tmp_path / cfg.hash(), progress=False)
        return run.metrics()["history"][0]["lr"]

    # smoke: SASRec's epoch is a few steps, TIGER's more; a warmup of 20 steps outlasts both
    # first epochs, and leaves SASRec further from its learning rate
    assert first_epoch_lr("sasrec", **{"train.warmup_steps": 20}) < first_epoch_lr(
        "tiger", **{"train.warmup_steps": 20}) < 1e-3
    for model in ("sasrec", "tiger"):
        assert first_epoch_lr(model, **{"train.warmup_epochs": 0.5}) == pytest.approx(1e-3)
