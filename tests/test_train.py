import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, write

import glasskit as gk
from glasskit.errors import GlasskitError
from glasskit.runs import Run, list_runs, load_checkpoint
from glasskit.train import Interrupted, train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _cycle_data(path, users=30, items=24, length=30):
    """Every user walks the item cycle: the next item is always the last item + 1."""
    rows = ["user_id,item_id,timestamp"]
    for u in range(users):
        rows += [f"u{u},{(5 * u + k) % items},{k}" for k in range(length)]
    write(path / "interactions.csv", "\n".join(rows) + "\n")
    np.save(path / "item_embeddings.npy",
            np.random.default_rng(0).normal(size=(items, 8)).astype(np.float32))
    write(path / "item_embeddings_ids.csv", "item_id\n" + "".join(f"{i}\n" for i in range(items)))
    return path


def _overfit_cfg(data_dir, **kw):
    return gk.profile("smoke", **{
        "data.dataset": "csv", "data.data_dir": str(data_dir), "data.short_len": 4,
        "data.train_targets_per_user": None, "tokenizer.method": "rqkmeans",
        "tokenizer.codebooks": [4, 4], "train.epochs": 30, "train.lr": 3e-3,
        "train.batch_size": 64, "train.patience": 30, "train.beam": 20, "model.dropout": 0.0,
        **kw})


def test_tiny_dataset_is_overfit(tmp_path):
    cfg = _overfit_cfg(_cycle_data(tmp_path / "cycle"))
    run = train(cfg, out=tmp_path / "run", progress=False)
    m = run.metrics()
    assert m["primary"] == "unmasked"  # users repeat items on the cycle
    assert m["test"]["unmasked"]["hit@1"] >= 0.9
    assert m["test"]["unmasked"]["acc"][0] >= 0.9
    assert len(m["history"]) == m["epochs_run"] <= 30


def test_resume_gives_the_same_final_metrics(tmp_path, monkeypatch):
    cfg = gk.profile("smoke")
    straight = train(cfg, out=tmp_path / "a", progress=False).metrics()
    here = straight["machine"]
    assert {h["machine"] for h in straight["history"]} == {here}
    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "b", progress=False, stop_after=1)
    assert Run(tmp_path / "b").metrics()["epochs_run"] == 1
    best = tmp_path / "b" / "best.pt"
    best.rename(tmp_path / "kept.pt")  # a run moved to another machine with last.pt alone
    with pytest.raises(GlasskitError, match=r"best\.pt \(its best epoch, 1\) is missing"):
        train(cfg, out=tmp_path / "b", progress=False)
    (tmp_path / "kept.pt").rename(best)
    monkeypatch.setattr("glasskit.train.machine_name", lambda device: "Another CPU")
    resumed = train(cfg, out=tmp_path / "b", progress=False).metrics()
    assert resumed["machine"] == f"{here} + Another CPU"  # resumed elsewhere: both named
    assert [h["machine"] for h in resumed["history"]][:2] == [here, "Another CPU"]
    assert resumed["test"] == straight["test"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    df = list_runs(tmp_path)
    assert len(df) == 2 and "test/masked/ndcg@10" in df.columns


def test_finished_run_is_reused_from_its_results_alone(tmp_path):
    """results/runs keeps finished runs without their checkpoints: a sweep reuses them as they
    are, and trains an unfinished one again."""
    cfg = gk.profile("smoke", **{"train.epochs": 2})
    run = train(cfg, out=tmp_path / "r", progress=False)
    kept = (run.path / "metrics.json").read_bytes()
    assert json.loads(kept)["machine"]  # which processor made the numbers
    for name in ("best.pt", "last.pt"):
        (run.path / name).unlink()
    assert train(cfg, out=tmp_path / "r", progress=False).path == run.path
    assert (run.path / "metrics.json").read_bytes() == kept
    assert not (run.path / "last.pt").exists()  # nothing was trained

    unfinished = json.loads(kept)
    del unfinished["test"]
    (run.path / "metrics.json").write_text(json.dumps(unfinished))
    with pytest.warns(UserWarning, match=r"records 2 trained epoch\(s\) but last\.pt is missing"):
        assert "test" in train(cfg, out=tmp_path / "r", progress=False).metrics()
    assert (run.path / "last.pt").is_file()  # trained again from the start


def test_checkpoint_from_another_config_is_refused(tmp_path):
    cfg = gk.profile("smoke", **{"train.epochs": 1})
    run = train(cfg, out=tmp_path / "r", progress=False)
    other = cfg.replace(seed=5)
    with pytest.raises(GlasskitError, match="checkpoint was written for another config"):
        load_checkpoint(run.path / "best.pt", other, __import__("torch").device("cpu"))
    with pytest.raises(GlasskitError, match="holds a run of another config"):
        train(other, out=tmp_path / "r", progress=False)


def test_cli_train_and_evaluate(tmp_path):
    env = {**os.environ, "GLASSKIT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "glasskit", "train", "--model", "tiger", "--dataset",
           "synthetic", "--profile", "smoke", "--epochs", "1", "--out", str(tmp_path / "run"),
           "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "ndcg@10" in json.loads(out.stdout)["test"]
    ev = subprocess.run([sys.executable, "-m", "glasskit", "evaluate", "--run",
                         str(tmp_path / "run"), "--beam", "20"],
                        capture_output=True, text=True, cwd=ROOT, env=env)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    assert res["masked"] == Run(tmp_path / "run").metrics()["test"]["masked"]
    for args, match in [(["--run", str(tmp_path / "nope")], "not a run directory"),
                        (["--run", str(tmp_path / "run"), "--beam", "5"],
                         r"train.beam \(5\) must be >= the largest K \(20\)")]:
        bad = subprocess.run([sys.executable, "-m", "glasskit", "evaluate", *args],
                             capture_output=True, text=True, cwd=ROOT, env=env)
        assert bad.returncode == 2 and match.replace("\\", "") in bad.stderr.replace("\\", "")


@pytest.mark.slow
def test_ddp_on_gloo_with_two_processes(tmp_path, monkeypatch):
    # a rank that aborts says where (faulthandler), and the ranks' own lines come before
    # torchrun's report in the message
    env = {**os.environ, "GLASSKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "glasskit", "train",
           "--dataset", "synthetic", "--profile", "smoke", "--epochs", "2", "--device", "cpu",
           "--set", "train.eval_batch_size=16", "--out", str(tmp_path / "ddp"), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-8000:]
    run = Run(tmp_path / "ddp")
    m = run.metrics()
    assert m["world_size"] == 2 and m["epochs_run"] == 2
    assert 0 <= m["test"]["masked"]["hit@20"] <= 1
    # the two ranks evaluated two batches of 16 users each; one process gives the same metrics
    # (every level metric included) and the same per-user ranks
    from glasskit.evaluation import final_metrics, load_run_model

    monkeypatch.setenv("GLASSKIT_CACHE", env["GLASSKIT_CACHE"])
    model, batcher, _, cfg = load_run_model(run, "cpu")
    alone, ranks = final_metrics(model, batcher, cfg, batcher.ds)
    assert alone["test"] == m["test"] and alone["valid"] == m["valid"]
    kept = run.ranks()
    assert all(np.array_equal(kept[k], ranks[k]) for k in ranks)


def test_evaluation_ranks_in_fp32_whatever_the_training_autocast(tmp_path):
    """A model trained under bf16 autocast ranks every user identically (top-20 lists and all
    level metrics) whether its config says amp=bf16 or amp=off: evaluation never autocasts and
    the heads project in fp32 even inside an autocast region."""
    import torch

    from glasskit.evaluation import evaluate, load_run_model
    from glasskit.profiles import apply_variant

    cfg = apply_variant(gk.profile("smoke", **{"train.amp": "bf16", "train.epochs": 2}),
                        "sidtier+shs")
    run = train(cfg, out=tmp_path / "bf16", progress=False)
    assert run.metrics()["train_precision"] == "bf16"
    model, batcher, _, cfg = load_run_model(run, "cpu")
    off = cfg.replace(**{"train.amp": "off"})
    for split in ("valid", "test"):
        a = evaluate(model, batcher, split, cfg, masked=True, full=True)
        b = evaluate(model, batcher, split, off, masked=True, full=True)
        assert a == b
    batch = batcher.batch("test", np.arange(8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
    assert all(lg.dtype == torch.float32 for lg in logits)
