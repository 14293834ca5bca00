"""Nothing a user owns is deleted, and no wrong input finishes as a result (issue 17): each
numbered case of the issue has a test here, named after it."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, write

import glasskit as gk
from glasskit.cli import main
from glasskit.config import Config
from glasskit.data import prepare
from glasskit.errors import ConfigError, DataError, GlasskitError
from glasskit.evaluation import evaluate_run
from glasskit.io import folder_lock
from glasskit.reports import build_reports, read_manifest, report_status
from glasskit.runs import Run
from glasskit.train import train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _csv(path, users=12, items=16, length=8, texts=True):
    """Each user walks the item cycle from its own start (timestamps 0..length-1)."""
    rows = ["user_id,item_id,timestamp"]
    for u in range(users):
        rows += [f"u{u},{(3 * u + k) % items},{k}" for k in range(length)]
    write(path / "interactions.csv", "\n".join(rows) + "\n")
    if texts:
        write(path / "items.csv", "item_id,title\n" + "".join(
            f"{i},film {i} {'drama' if i % 2 else 'comedy'}\n" for i in range(items)))
    return path


def _cfg(data_dir, **kw) -> Config:
    return gk.profile("smoke", **{"data.dataset": "csv", "data.data_dir": str(data_dir),
                                  "data.short_len": 4, "tokenizer.codebooks": [4, 4],
                                  "tokenizer.method": "rqkmeans", "train.epochs": 2, **kw})


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "glasskit", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


# -- 1-3: data lost or replaced ---------------------------------------------------------------
def test_1_train_out_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    data = _csv(tmp_path / "data")
    mine = tmp_path / "mine"
    write(mine / "NOTES.txt", "my notes\n")
    write(mine / "interactions.csv", "user_id,item_id,timestamp\n")
    write(mine / "items.csv", "item_id,title\n")
    before = _snapshot(mine)
    for fresh in ([], ["--fresh"]):
        code = main(["train", "--dataset", "csv", "--data-dir", str(data), "--profile", "smoke",
                     "--out", str(mine), "--quiet", *fresh])
        err = capsys.readouterr().err
        assert code == 2 and f"{mine.resolve()}: holds files that are not a glasskit run" in err
        assert "NOTES.txt" in err and "nothing was changed" in err
        assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(before)


def test_2_train_out_refuses_the_data_folder_itself(tmp_path, capsys):
    data = _csv(tmp_path / "data")
    before = _snapshot(data)
    code = main(["train", "--dataset", "csv", "--data-dir", str(data), "--profile", "smoke",
                 "--out", str(data), "--quiet"])
    assert code == 2 and "interactions.csv" in capsys.readouterr().err
    assert _snapshot(data) == before


def test_3_train_out_refuses_a_file(tmp_path, capsys):
    data = _csv(tmp_path / "data")
    target = write(tmp_path / "results.txt", "keep me\n")
    code = main(["train", "--dataset", "csv", "--data-dir", str(data), "--profile", "smoke",
                 "--out", str(target), "--quiet", "--fresh"])
    assert code == 2 and "is a file, not a run folder" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "results.txt"]  # nothing else


def test_3_fresh_clears_only_a_run_and_not_files_added_to_it(tmp_path):
    data = _csv(tmp_path / "data")
    run = train(_cfg(data, **{"train.epochs": 1}), out=tmp_path / "run", progress=False)
    assert train(_cfg(data, **{"train.epochs": 1}), out=tmp_path / "run", resume=False,
                 progress=False).path == run.path  # a run folder: --fresh replaces it
    write(run.path / "analysis.ipynb", "{}")
    with pytest.raises(GlasskitError, match=r"--fresh would replace this run folder, which also "
                                            r"holds analysis.ipynb"):
        train(_cfg(data, **{"train.epochs": 1}), out=run.path, resume=False, progress=False)
    assert (run.path / "analysis.ipynb").read_text() == "{}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(_cfg(data, **{"train.epochs": 1}), out=empty, progress=False) is not None


def test_3_reports_out_refuses_a_file_and_a_foreign_folder(tmp_path):
    target = write(tmp_path / "report.txt", "keep me\n")
    with pytest.raises(GlasskitError, match="is a file, not a reports folder"):
        build_reports({"profile": "smoke"}, target, only=["01"])
    assert target.read_text() == "keep me\n"
    mine = tmp_path / "mine"
    write(mine / "thesis.tex", "\\section{}")
    with pytest.raises(GlasskitError, match=r"holds files but no reports \(no manifest.json\)"):
        build_reports({"profile": "smoke"}, mine, only=["01"])
    assert _snapshot(mine) == {"thesis.tex": b"\\section{}"}
    out = _cli("reports", "--out", str(target), "--only", "01")
    assert out.returncode == 2 and "is a file" in out.stderr and "Traceback" not in out.stderr


# -- 4-9: silently wrong ----------------------------------------------------------------------
def test_4_no_training_sample_is_an_error_not_a_finished_run(tmp_path):
    data = _csv(tmp_path / "data", length=3)
    assert prepare(_cfg(data)).stats()["samples"]["train"] == 0
    with pytest.raises(GlasskitError, match=r"0 training samples .* from\s+4 interactions on"):
        train(_cfg(data), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(ConfigError, match=r">= 3 \(a test target, a validation target and one "
                                          r"earlier item as their input; a user needs 4"):
        _cfg(data, **{"data.min_user_interactions": 2})


def test_5_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                              monkeypatch):
    data = _csv(tmp_path / "data")
    with pytest.raises(ConfigError, match="train.lr must be a finite positive number, got inf"):
        _cfg(data, **{"train.lr": float("inf")})
    import glasskit.train as tr

    real, calls = tr.train_step, []

    def diverging(*args, **kw):  # the loss of epoch 2's third step is NaN
        calls.append(1)
        loss = real(*args, **kw)
        return loss * float("nan") if len(calls) == steps + 3 else loss

    cfg = _cfg(data, **{"train.epochs": 3, "train.batch_size": 8})
    steps = -(-prepare(cfg).stats()["samples"]["train"] // 8)
    monkeypatch.setattr(tr, "train_step", diverging)
    with pytest.raises(tr.Diverged, match=rf"NaN or infinite at epoch 2, step 3 of {steps} .* "
                                          r"last.pt still holds epoch 1"):
        train(cfg, out=tmp_path / "run", progress=False)
    run = Run(tmp_path / "run")
    assert "test" not in run.metrics() and run.metrics()["epochs_run"] == 1
    assert torch.load(run.path / "last.pt", weights_only=True)["state"]["epoch"] == 1


def test_6_an_explicit_model_that_disagrees_with_the_variant_is_refused(capsys):
    assert main(["train", "--model", "tiger", "--variant", "no-s2d", "--profile", "smoke"]) == 2
    assert ("--variant no-s2d is a row of dualgr, not of --model tiger: drop --model, or pass "
            "--model dualgr") in capsys.readouterr().err


def test_7_settings_that_would_be_ignored_or_nonsense_are_refused(tmp_path):
    data = _csv(tmp_path / "data")
    with pytest.raises(DataError, match=r"data.min_rating=4 filters by rating, but these "
                                        r"interactions have no rating column"):
        prepare(_cfg(data, **{"data.min_rating": 4}))
    with pytest.raises(ConfigError, match=r"train.grad_clip must be a finite number >= 0"):
        _cfg(data, **{"train.grad_clip": -1})


def test_8_timestamps_a_float_cannot_hold_exactly_are_refused(tmp_path):
    for name, stamps in (("ns", ["1700000000000000001", "1700000000000000002.5"]),
                         ("long", ["170000000000000000001", "170000000000000000002"])):
        d = tmp_path / name
        rows = [f"u{u},{i},{stamps[k % 2]}" for u in range(3) for k, i in enumerate((1, 2, 3, 4))]
        write(d / "interactions.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
        with pytest.raises(DataError, match=r"'timestamp' holds .* in row 0, beyond the integers a "
                                            r"float64 holds exactly"):
            prepare(_cfg(d))
    ok = tmp_path / "ok"  # nanosecond integers alone stay exact (int64) and keep their order
    rows = [f"u{u},{i},{1700000000000000000 + k}" for u in range(3) for k, i in enumerate((4, 3, 2, 1))]
    write(ok / "interactions.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    seqs = prepare(_cfg(ok)).seqs
    assert [seqs.item_ids[i] for i in seqs.items[: seqs.lengths[0]]] == ["4", "3", "2", "1"]


def test_9_repeated_item_ids_and_identical_embeddings_are_refused(tmp_path):
    d = _csv(tmp_path / "items")
    with open(d / "items.csv", "a") as f:
        f.write("3,another film 3\n")
    with pytest.raises(DataError, match=r"items.csv: item_id '3' appears in rows \[3, 16\]"):
        prepare(_cfg(d))
    e = _csv(tmp_path / "emb", texts=False)
    np.save(e / "item_embeddings.npy", np.random.default_rng(0).normal(size=(17, 4)))
    write(e / "item_embeddings_ids.csv", "item_id\n" + "".join(f"{i}\n" for i in range(16)) + "5\n")
    with pytest.raises(DataError, match=r"item_embeddings_ids.csv: item_id '5' appears in rows \[5, 16\]"):
        prepare(_cfg(e))
    z = _csv(tmp_path / "zeros", texts=False)
    np.save(z / "item_embeddings.npy", np.zeros((16, 4), np.float32))
    write(z / "item_embeddings_ids.csv", "item_id\n" + "".join(f"{i}\n" for i in range(16)))
    with pytest.raises(DataError, match="the same vector for all 16 items"):
        train(_cfg(z), out=tmp_path / "run", progress=False)


# -- 10: clear errors instead of tracebacks ---------------------------------------------------
@pytest.mark.parametrize("setting, match", [
    ("model=3", r"'model' is a config section, not a value: set one of its keys"),
    ("data.min_rating=abc", r"data.min_rating must be a number or null, got 'abc'"),
    ("train.threads=-3", r"train.threads must be a non-negative integer, got -3"),
    ("train.weight_decay=-5", r"train.weight_decay must be a finite number >= 0, got -5"),
])
def test_10_wrong_settings_are_named(setting, match, capsys):
    assert main(["train", "--profile", "smoke", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and __import__("re").search(match, err), err


def test_10_wrong_compare_keys_and_report_parameters_are_named(tmp_path, capsys):
    run = train(_cfg(_csv(tmp_path / "data"), **{"train.epochs": 1}), out=tmp_path / "run",
                progress=False)
    assert main(["compare", str(run.path), "--keys", "foo,hit@10"]) == 2
    assert "no metric 'foo' in the test metrics; choose --keys among" in capsys.readouterr().err
    for param in ("01:seed=[1", "01:seed=!!python/object:os.system ls"):
        assert main(["reports", "--only", "01", "--out", str(tmp_path / "r"), "--param", param]) == 2
        assert "the value is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_10_ctrl_c_says_the_run_resumes(tmp_path):
    data = _csv(tmp_path / "data")
    script = (
        "import os, signal, sys\n"
        "# a shell that starts jobs in the background leaves SIGINT ignored; a terminal does not\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import glasskit.train as t\n"
        "real, calls = t.train_step, []\n"
        "def step(*a, **k):  # Ctrl-C arrives during the third step\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(*a, **k)\n"
        "t.train_step = step\n"
        "from glasskit.cli import main\n"
        f"sys.exit(main(['train', '--dataset', 'csv', '--data-dir', {str(data)!r}, '--profile', "
        f"'smoke', '--out', {str(tmp_path / 'run')!r}, '--quiet']))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 130 and "Traceback" not in out.stderr, out.stderr
    assert "interrupted (Ctrl-C). train resumes from the last finished epoch" in out.stderr


def test_10_a_full_disk_is_named_and_the_best_checkpoint_survives(tmp_path, monkeypatch):
    data = _csv(tmp_path / "data")
    cfg = _cfg(data, **{"train.epochs": 2})
    from glasskit.runs import save_checkpoint

    run = train(cfg.replace(**{"train.epochs": 1}), out=tmp_path / "one", progress=False)
    best = (run.path / "best.pt").read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(GlasskitError, match=r"best.pt: could not write the checkpoint .*No space "
                                            r"left on device.* MiB are free"):
        save_checkpoint(run.path / "best.pt", {"x": 1})
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")))
    with pytest.raises(GlasskitError, match=r"if no space is left on the device, free some"):
        save_checkpoint(run.path / "best.pt", {"x": 1})
    monkeypatch.setattr(torch, "save", real)
    assert (run.path / "best.pt").read_bytes() == best
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


# -- 11-15: misleading ------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on the bare pickle
def test_11_a_crafted_checkpoint_is_refused_whatever_torch_says(tmp_path):
    data = _csv(tmp_path / "data")
    cfg = _cfg(data)
    run = train(cfg, out=tmp_path / "run", progress=False)
    marker = tmp_path / "pwned"
    good_best = (run.path / "best.pt").read_bytes()
    ckpt = torch.load(run.path / "last.pt", weights_only=True)
    ckpt["state"]["payload"] = _Payload(str(marker))
    torch.save(ckpt, run.path / "last.pt")
    (run.path / "metrics.json").unlink()  # unfinished: train would resume from last.pt
    with pytest.raises(GlasskitError, match=r"last.pt: refused: it holds objects other than "
                                            r"tensors and plain data \(it names (io|builtins).open") as e:
        train(cfg, out=run.path, progress=False)  # never a silent resume from best.pt
    assert "weights_only" not in str(e.value)
    plain = run.path / "best.pt"  # a bare pickle, not torch's zip format
    plain.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(GlasskitError, match=r"best.pt: refused") as e:
        evaluate_run(run, device="cpu")
    assert "weights_only" not in str(e.value) and not marker.exists()
    plain.write_bytes(good_best[:300])
    with pytest.raises(GlasskitError, match=r"best.pt: damaged checkpoint") as e:
        evaluate_run(run, device="cpu")
    assert "weights_only" not in str(e.value)


def test_12_the_advice_for_a_damaged_metrics_json_works(tmp_path, capsys):
    data = _csv(tmp_path / "data")
    run = train(_cfg(data), out=tmp_path / "run", progress=False)
    good = run.metrics()
    text = (run.path / "metrics.json").read_text()
    (run.path / "metrics.json").write_text(text[: len(text) // 2])
    assert main(["compare", str(run.path)]) == 2
    err = capsys.readouterr().err
    advice = err.split("re-create it with `python -m glasskit ")[1].split("`")[0].split()
    with pytest.warns(UserWarning, match="rebuilding it from the checkpoints"):
        assert main(advice + ["--quiet"]) == 0
    again = run.metrics()
    assert again["test"] == good["test"] and again["history"] == good["history"]
    assert [p.name for p in run.path.glob(".metrics.json.damaged-*")]  # kept, not deleted
    assert main(["compare", str(run.path)]) == 0


def test_13_reports_per_notebook_parameters_are_not_stale_and_the_folder_is_locked(tmp_path):
    from nbformat import v4
    from nbformat import write as nbwrite

    books = tmp_path / "nb"
    books.mkdir()
    nb = v4.new_notebook()
    params = v4.new_code_cell("profile = 'quick'\nshort_len = 5")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, v4.new_code_cell("x = short_len")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbwrite(nb, str(books / "01_one.ipynb"))
    out = tmp_path / "out"
    build_reports({"profile": "smoke"}, out, folder=books, per_notebook={"01": {"short_len": 7}})
    m = read_manifest(out)
    assert report_status(m["notebooks"]["01_one"], m["requested"], "01") == "ok"
    assert "stale" not in (out / "index.html").read_text().split("<table>")[1]
    with folder_lock(out, "reports folder"):
        with pytest.raises(GlasskitError, match=r"out: in use by process"):
            build_reports({"profile": "smoke"}, out, folder=books)
    with pytest.raises(GlasskitError, match=r"no notebook numbered \['99'\]"):
        build_reports({"profile": "smoke"}, tmp_path / "new", only=["99"], folder=books)
    assert not (tmp_path / "new").exists()


def test_14_a_symlink_to_a_locked_run_folder_is_locked_too(tmp_path):
    data = _csv(tmp_path / "data")
    (tmp_path / "conc").mkdir()
    (tmp_path / "conclink").symlink_to(tmp_path / "conc")
    with folder_lock(tmp_path / "conc", "run folder"):
        with pytest.raises(GlasskitError, match=r"conc: in use by process"):
            train(_cfg(data), out=tmp_path / "conclink", progress=False)


def test_15_a_beam_wider_than_the_catalogue_is_capped_and_said(tmp_path):
    data = _csv(tmp_path / "data")
    run = train(_cfg(data, **{"train.epochs": 1}), out=tmp_path / "run", progress=False)
    with pytest.warns(UserWarning, match=r"beam 100000 exceeds the 16 items of the catalogue: "
                                         r"ranking with beam 20"):
        res = evaluate_run(run, beam=100000, device="cpu")
    assert res["beam"] == 20
    assert res["masked"] == evaluate_run(run, beam=20, device="cpu")["masked"]
    out = _cli("evaluate", "--run", str(run.path), "--beam", "100000",
               env_extra={"GLASSKIT_CACHE": os.environ["GLASSKIT_CACHE"]})
    assert out.returncode == 0 and json.loads(out.stdout)["beam"] == 20
