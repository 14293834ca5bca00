"""Trustworthy artifacts (issue 10): content-keyed caches and runs, safe checkpoints, clear
errors on damaged files, data without text, wrong inputs, locked run folders."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write

import glasskit as gk
from glasskit.analysis.run_tables import seed_table
from glasskit.cli import main
from glasskit.data import prepare
from glasskit.errors import ConfigError, DataError, GlasskitError
from glasskit.evaluation import evaluate_run
from glasskit.io import read_json, write_json
from glasskit.pipeline import load, tokenize_dataset
from glasskit.runs import Run, run_lock
from glasskit.train import train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _csv(path, users=24, items=20, length=14, seed=0, texts=True, embeddings=False):
    """Each user walks the item cycle from a random start (timestamps 0..length-1)."""
    rng = np.random.default_rng(seed)
    rows = ["user_id,item_id,timestamp"]
    for u in range(users):
        start = int(rng.integers(items))
        rows += [f"u{u},{(start + k) % items},{k}" for k in range(length)]
    write(path / "interactions.csv", "\n".join(rows) + "\n")
    if texts:
        write(path / "items.csv", "item_id,title\n" + "".join(
            f"{i},film {i} {'drama' if i % 2 else 'comedy'}\n" for i in range(items)))
    if embeddings:
        np.save(path / "item_embeddings.npy", rng.normal(size=(items, 6)).astype(np.float32))
        write(path / "item_embeddings_ids.csv", "item_id\n" + "".join(f"{i}\n" for i in range(items)))
    return path


def _cfg(data_dir, **kw):
    return gk.profile("smoke", **{"data.dataset": "csv", "data.data_dir": str(data_dir),
                                  "data.short_len": 4, "tokenizer.codebooks": [4, 4],
                                  "tokenizer.method": "rqkmeans", "train.epochs": 2, **kw})


# -- 1. stale results after data changes --------------------------------------------------------
def test_sid_table_follows_embeddings_edited_in_place(tmp_path):
    d = _csv(tmp_path / "d", embeddings=True)
    cfg = _cfg(d)
    before = tokenize_dataset(prepare(cfg))
    np.save(d / "item_embeddings.npy", np.random.default_rng(9).normal(size=(20, 6)).astype(np.float32))
    after = tokenize_dataset(prepare(cfg))
    assert before.recon_error != after.recon_error  # rebuilt from the new contents
    assert tokenize_dataset(prepare(cfg)).recon_error == after.recon_error  # and cached again


def test_the_same_data_has_one_fingerprint_whatever_the_pandas_text_dtype():
    """pandas 3 reads text columns into its string dtype, pandas 2 into object: the GPU machine
    (pandas 3) gave the Toys runs another data fingerprint than this machine's for the same
    files, so its runs would not pair with these. Text is hashed as object under both."""
    from glasskit.io import fingerprint

    items = pd.DataFrame({"item": [1, 2, 3], "title": ["a", "b|c", "é"]})
    text = items.astype({"title": pd.StringDtype()})
    assert fingerprint(text) == fingerprint(items)
    edited = items.assign(title=["a", "b|c", "e"])
    assert fingerprint(edited.astype({"title": pd.StringDtype()})) != fingerprint(items)


def test_run_on_edited_data_is_never_reused(tmp_path):
    d = _csv(tmp_path / "d")
    cfg = _cfg(d)
    first = train(cfg, out=tmp_path / "run", progress=False)
    old, old_data = first.metrics()["test"], first.info["data_fingerprint"]
    df = pd.read_csv(d / "interactions.csv", dtype=str)
    df["timestamp"] = np.random.default_rng(1).permutation(df["timestamp"].to_numpy())
    df.to_csv(d / "interactions.csv", index=False)
    with pytest.raises(GlasskitError, match="holds a run made from other data"):
        train(cfg, out=tmp_path / "run", progress=False)
    with pytest.raises(GlasskitError, match="trained on other data"):
        evaluate_run(first, device="cpu")
    fresh = train(cfg, out=tmp_path / "run", resume=False, progress=False)
    assert fresh.info["data_fingerprint"] != old_data and fresh.metrics()["test"] != old
    # the default run folder is keyed on the data's content: a new folder, no error
    runs = tmp_path / "runs"
    os.environ["GLASSKIT_RUNS"] = str(runs)
    try:
        a = train(cfg, progress=False)
        _csv(d, items=22)  # more items: the old checkpoint would not even fit the model
        b = train(cfg, progress=False)
    finally:
        del os.environ["GLASSKIT_RUNS"]
    assert a.path != b.path and a.info["data_fingerprint"] != b.info["data_fingerprint"]


# -- 2. no code execution from a run folder -----------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs on unpickling: creates the marker file


def test_crafted_checkpoint_is_refused_before_it_runs(tmp_path):
    d = _csv(tmp_path / "d")
    cfg = _cfg(d)
    run = train(cfg, out=tmp_path / "run", progress=False)
    marker = tmp_path / "pwned"
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run.path / name, weights_only=True)
        ckpt["state"]["payload"] = _Payload(str(marker))
        torch.save(ckpt, run.path / name)
    with pytest.raises(GlasskitError, match="refused: it holds objects other than tensors"):
        evaluate_run(run, device="cpu")
    (run.path / "metrics.json").unlink()  # unfinished: train resumes from last.pt
    with pytest.raises(GlasskitError, match="refused"):
        train(cfg, out=run.path, progress=False)
    assert not marker.exists()


# -- 3. damaged files -------------------------------------------------------------------------
def test_damaged_checkpoints_metrics_and_caches_are_named(tmp_path):
    d = _csv(tmp_path / "d")
    cfg = _cfg(d, **{"train.epochs": 3})
    straight = train(cfg, out=tmp_path / "a", progress=False).metrics()
    from glasskit.train import Interrupted

    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "b", progress=False, stop_after=2)
    last = tmp_path / "b" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])  # truncated mid-write by something else
    with pytest.warns(UserWarning, match=r"last.pt: damaged checkpoint .* resuming from best.pt"):
        resumed = train(cfg, out=tmp_path / "b", progress=False).metrics()
    assert resumed["test"] == straight["test"]  # replaying from the best epoch is exact

    run = Run(tmp_path / "b")
    (run.path / "best.pt").write_bytes(b"")
    with pytest.raises(GlasskitError, match=r"best.pt: damaged checkpoint"):
        evaluate_run(run, device="cpu")
    (run.path / "metrics.json").unlink()
    last.write_bytes(b"\x00" * 10)
    with pytest.raises(GlasskitError, match=r"no readable best.pt and best.opt.pt to fall back "
                                            r"to; start over with --fresh"):
        train(cfg, out=run.path, progress=False)

    text = (tmp_path / "a" / "metrics.json").read_text()
    (tmp_path / "a" / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.raises(GlasskitError, match=r"a/metrics.json: damaged JSON"):
        seed_table([tmp_path / "a"])
    assert main(["compare", str(tmp_path / "a")]) == 2

    cache = tmp_path / "cache"
    for f in (cache / "tokenizers").glob("*.npz"):
        f.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match="damaged cache entry"):
        load(cfg)
    for f in (cache / "embeddings").glob("*.npy"):
        f.write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="damaged cache entry"):
        prepare(cfg).embeddings()


def test_optimizer_state_is_kept_apart_and_paired(tmp_path):
    """Each checkpoint keeps its optimizer state in a file of its own (so a large model's
    files stay small enough to commit), paired by a token: a mismatched pair is damaged, and
    a checkpoint from before the split (optimizer inside) still resumes exactly."""
    from glasskit.train import Interrupted

    d = _csv(tmp_path / "d")
    cfg = _cfg(d, **{"train.epochs": 3})
    straight = train(cfg, out=tmp_path / "a", progress=False).metrics()
    b = tmp_path / "b"
    with pytest.raises(Interrupted):
        train(cfg, out=b, progress=False, stop_after=2)
    last, last_opt = torch.load(b / "last.pt", weights_only=True), b / "last.opt.pt"
    assert "opt" not in last and torch.load(last_opt, weights_only=True)["token"] == last["opt_token"]
    saved = last_opt.read_bytes()

    # the best epoch's pair (epoch 1 or 2, as this machine's floats decide): another pair
    best = torch.load(b / "best.pt", weights_only=True)["state"]["epoch"]
    last_opt.write_bytes((b / "best.opt.pt").read_bytes())
    with pytest.warns(UserWarning, match=r"last.pt: damaged checkpoint \(last.opt.pt is not its "
                                         rf"pair.*resuming from best.pt \(epoch {best}\)"):
        with pytest.raises(Interrupted):
            train(cfg, out=b, progress=False, stop_after=best + 1)
    assert Run(b).metrics()["epochs_run"] == best + 1  # one epoch on from the best
    last_opt.unlink()
    (b / "best.opt.pt").unlink()
    with pytest.raises(GlasskitError, match=r"last.pt: its optimizer state last.opt.pt is missing "
                                            r".*best.opt.pt\), and no readable best.pt and best.opt.pt"):
        train(cfg, out=b, progress=False)

    last_opt.write_bytes(saved)  # the epoch-2 pair again, merged as an older run kept it
    old = {**last, "opt": torch.load(last_opt, weights_only=True)["opt"]}
    del old["opt_token"]
    torch.save(old, b / "last.pt")
    last_opt.unlink()
    assert train(cfg, out=b, progress=False).metrics()["test"] == straight["test"]
    assert "opt" not in torch.load(b / "last.pt", weights_only=True)  # written apart from now on


# -- 4. data without text ---------------------------------------------------------------------
def test_csv_without_items_trains_on_interaction_embeddings(tmp_path):
    d = _csv(tmp_path / "d", texts=False)
    with pytest.warns(UserWarning, match="content-free embeddings from the training interactions"):
        run = train(_cfg(d, **{"embed.method": "auto"}), out=tmp_path / "run", progress=False)
    assert 0 <= run.metrics()["test"]["unmasked"]["hit@10"] <= 1
    with pytest.raises(DataError, match="accepted item inputs: items.csv with item_id and text"):
        prepare(_cfg(d, **{"embed.method": "tfidf"})).embeddings()


def test_interaction_embeddings_never_see_held_out_targets(tmp_path):
    d = _csv(tmp_path / "d", texts=False)
    cfg = _cfg(d, **{"embed.method": "interactions"})
    before = prepare(cfg).embeddings()
    df = pd.read_csv(d / "interactions.csv", dtype=str)
    last = df.groupby("user_id").tail(2).index  # every user's validation and test targets
    df.loc[last, "item_id"] = df.loc[last[::-1], "item_id"].to_numpy()
    df.to_csv(d / "interactions.csv", index=False)
    ds = prepare(cfg)
    assert set(ds.seqs.item_ids) == {str(i) for i in range(20)}
    np.testing.assert_array_equal(ds.embeddings(), before)


# -- 5. silent wrong inputs -------------------------------------------------------------------
def test_wrong_inputs_get_clear_errors(tmp_path, capsys):
    d = _csv(tmp_path / "d")
    assert main(["train", "--dataset", "csv", "--data-dir", str(d), "--profile", "smoke",
                 "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    assert "train.epochs must be a positive integer, got 0" in capsys.readouterr().err

    inf = _csv(tmp_path / "inf")
    lines = (inf / "interactions.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",inf"
    (inf / "interactions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'timestamp' must be finite; row 4 holds inf"):
        prepare(_cfg(inf))

    folder = _csv(tmp_path / "dir", texts=False)
    (folder / "items.csv").mkdir()
    with pytest.raises(DataError, match=r"items.csv: is a directory"):
        prepare(_cfg(folder))

    mixed = _csv(tmp_path / "mixed")
    (mixed / "interactions.csv").write_text(
        (mixed / "interactions.csv").read_text().replace(",7,", ",x7,"))
    (mixed / "items.csv").write_text((mixed / "items.csv").read_text() + "x7,film x7 western\n")
    ds = prepare(_cfg(mixed))
    texts = dict(zip(ds.seqs.item_ids, ds.texts()))
    assert texts["3"] == "film 3 drama" and texts["x7"] == "film x7 western"  # still attached


def test_metrics_json_is_strict_json(tmp_path):
    write_json(tmp_path / "m.json", {"crp": [1.5, float("nan")], "x": np.float32("inf")})
    strict = json.loads((tmp_path / "m.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert strict == {"crp": [1.5, None], "x": None}
    tiny = _csv(tmp_path / "tiny", users=4, length=6)
    run = train(_cfg(tiny), out=tmp_path / "run", progress=False)
    json.loads((run.path / "metrics.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert read_json(run.path / "metrics.json")["primary"] in ("masked", "unmasked")


# -- 6. one process per run folder ------------------------------------------------------------
def test_second_process_on_a_run_folder_is_told_who_holds_it(tmp_path):
    d = _csv(tmp_path / "d")
    with run_lock(tmp_path / "run"):
        with pytest.raises(GlasskitError, match=rf"run: in use by process {os.getpid()} on .* since"):
            train(_cfg(d), out=tmp_path / "run", progress=False)
    assert train(_cfg(d), out=tmp_path / "run", progress=False) is not None  # released


def test_a_config_error_leaves_no_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs must be a positive integer"):
        train(_cfg(_csv(tmp_path / "d"), **{"train.epochs": 0}), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
