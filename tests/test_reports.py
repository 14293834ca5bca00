import json
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT

import glasskit as gk
from glasskit.data import prepare
from glasskit.notebook import read_records
from glasskit.pipeline import load
from glasskit.reports import NOTEBOOKS, NotebookFailed, build_reports


@pytest.mark.slow
def test_notebook_01_on_smoke_records_its_figures(tmp_path):
    build_reports({"profile": "smoke", "dataset": "synthetic"}, tmp_path, only=["01"])
    rec = read_records(tmp_path / "01_data_preparation.ipynb")
    expected = prepare(gk.profile("smoke")).stats()
    for key in ("users", "items", "interactions", "length_max", "long_len_mean", "samples"):
        assert rec[key] == expected[key], key
    assert rec["leakage_checked_samples"] == sum(expected["samples"].values())
    html = (tmp_path / "01_data_preparation.html").read_text()
    assert html.count("plotly-graph-div") >= 4
    assert "01_data_preparation.html" in (tmp_path / "index.html").read_text()


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'quick'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_failing_cell_is_named_and_earlier_reports_survive(tmp_path):
    books, out = tmp_path / "nb", tmp_path / "out"
    books.mkdir()
    _notebook(books / "01_fine.ipynb", "from glasskit.notebook import record\nrecord('x', 1)")
    build_reports({"profile": "smoke"}, out, folder=books)
    good = (out / "01_fine.ipynb").read_bytes()
    _notebook(books / "01_fine.ipynb", "raise KeyError('boom')")
    _notebook(books / "02_bad.ipynb", "1 / 0")
    with pytest.raises(NotebookFailed, match=r"01_fine.ipynb: cell .* raised KeyError"):
        build_reports({"profile": "smoke"}, out, folder=books)
    assert (out / "01_fine.ipynb").read_bytes() == good  # earlier report intact
    assert (out / "01_fine.failed.ipynb").exists()
    assert not list(out.glob(".*running*"))


@pytest.mark.slow
def test_index_shows_status_parameters_and_staleness(tmp_path):
    books, out = tmp_path / "nb", tmp_path / "out"
    books.mkdir()
    _notebook(books / "01_one.ipynb", "x = 1")
    _notebook(books / "02_two.ipynb", "y = 2")
    build_reports({"profile": "smoke", "dataset": "synthetic"}, out, folder=books)
    build_reports({"profile": "quick", "dataset": "ml-100k"}, out, folder=books, only=["02"])
    _notebook(books / "02_two.ipynb", "1 / 0")
    with pytest.raises(NotebookFailed):
        build_reports({"profile": "quick", "dataset": "ml-1m"}, out, folder=books, only=["02"])
    page = (out / "index.html").read_text()
    rows = {r.split("</td>")[0]: r for r in page.split("<tr>")[2:]}
    one = next(r for k, r in rows.items() if "01_one" in k)
    two = next(r for k, r in rows.items() if "02_two" in k)
    assert "stale" in one and "dataset=synthetic, profile=smoke" in one  # built with older params
    assert re.search(r"failed: cell \d+ \(index \d+\) raised ZeroDivisionError", two)
    assert "02_two.failed.ipynb" in two and "dataset=ml-100k, profile=quick" in two  # last good
    assert "Latest request: dataset=ml-1m, profile=quick" in page


@pytest.mark.slow
def test_wrong_notebook_parameter_gives_a_clear_error(tmp_path):
    books = tmp_path / "nb"
    books.mkdir()
    shutil.copy(NOTEBOOKS / "01_data_preparation.ipynb", books)
    with pytest.raises(NotebookFailed, match=r"ConfigError: profile: unknown profile 'tiny'"):
        build_reports({"profile": "tiny"}, tmp_path / "out", folder=books)


def test_cli_data_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "glasskit", "data", "--dataset", "synthetic",
                          "--profile", "smoke"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats == json.loads(json.dumps(prepare(gk.profile("smoke")).stats()))


def test_cli_errors_are_clear():
    bad = subprocess.run([sys.executable, "-m", "glasskit", "data", "--dataset", "ml-latest-small"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "needs data_dir" in bad.stderr and "Traceback" not in bad.stderr
    unknown = subprocess.run([sys.executable, "-m", "glasskit", "data", "--dataset", "nope"],
                             capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr
    only = subprocess.run([sys.executable, "-m", "glasskit", "reports", "--only", "99"],
                          capture_output=True, text=True, cwd=ROOT)
    assert only.returncode == 2 and "no notebook numbered ['99']" in only.stderr


def test_every_notebook_has_one_parameters_cell():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
            f"{path.name} has outputs: run `make strip` before committing")


@pytest.mark.slow
def test_notebook_02_on_smoke_records_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    build_reports({"profile": "smoke", "dataset": "synthetic"}, tmp_path, only=["02"])
    rec = read_records(tmp_path / "02_tokenization.ipynb")
    ds, table = load(gk.profile("smoke"))
    assert rec["items"] == ds.seqs.n_items == rec["unique_full_sids"]
    assert rec["codebooks"] == gk.profile("smoke").tokenizer.codebooks
    assert len(rec["utilization"]) == 3 and min(rec["utilization"]) >= 0.75
    sizes = sorted(rec["resize_mean_lengths"], key=int)
    means = [rec["resize_mean_lengths"][k] for k in sizes]
    assert means == sorted(means, reverse=True)  # a smaller first level retrieves more
    assert (tmp_path / "02_tokenization.html").exists()


def test_cli_tokenize_prints_statistics(tmp_path):
    env = {**__import__("os").environ, "GLASSKIT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "glasskit", "tokenize", "--dataset", "synthetic",
                          "--profile", "smoke", "--method", "rqkmeans", "--codebooks", "8,4"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["method"] == "rqkmeans" and stats["codebooks"] == [8, 4]
    assert [u["size"] for u in stats["usage"]] == [8, 4]
    bad = subprocess.run([sys.executable, "-m", "glasskit", "tokenize", "--profile", "smoke",
                          "--dataset", "synthetic", "--codebooks", "8,x"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert bad.returncode == 2 and "--codebooks: expected comma-separated integers" in bad.stderr


@pytest.mark.slow
def test_notebook_03_on_smoke_trains_then_reuses_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    params = {"profile": "smoke", "dataset": "synthetic"}
    build_reports(params, tmp_path / "out", only=["03"])
    rec = read_records(tmp_path / "out" / "03_training.ipynb")
    from glasskit.runs import Run

    run = tmp_path / "runs" / rec["run"]
    metrics = Run(run).metrics()
    primary = metrics["test"][metrics["primary"]]
    assert rec["test_ndcg@10"] == primary["ndcg@10"] and rec["model"] == "tiger"
    assert len(rec["acc"]) == len(rec["precision"]) == 4  # 3 levels + dedup
    mtime = (run / "best.pt").stat().st_mtime
    build_reports(params, tmp_path / "out", only=["03"])  # reuses the cached run
    assert (run / "best.pt").stat().st_mtime == mtime
    assert read_records(tmp_path / "out" / "03_training.ipynb")["test_ndcg@10"] == rec["test_ndcg@10"]


@pytest.mark.slow
def test_notebook_03_accepts_glass_and_a_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    build_reports({"profile": "smoke", "dataset": "synthetic", "model": "glass",
                   "variant": "sidtier+shs+cr+sn", "epochs": 1}, tmp_path / "out", only=["03"])
    rec = read_records(tmp_path / "out" / "03_training.ipynb")
    from glasskit.runs import Run

    cfg = Run(tmp_path / "runs" / rec["run"]).config
    assert rec["model"] == "glass" and cfg.model.variant == "sidtier+shs+cr+sn"
    assert cfg.model.neighbours and cfg.tokenizer.codebooks[0] == 2  # smoke K0=8 resized by 4


@pytest.mark.slow
def test_notebook_03_trains_and_shows_every_other_model(tmp_path, monkeypatch):
    """ID and SID models alike go through 03: the recorded test metrics are the run's."""
    from glasskit.runs import Run

    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    for model in ("sasrec", "dualgr", "gems", "intrr"):
        out = tmp_path / model
        epochs = 3 if model == "gems" else 1  # GEMs evaluates a stage-3 checkpoint: epoch 3 on smoke
        build_reports({"profile": "smoke", "model": model, "epochs": epochs}, out, only=["03"])
        rec = read_records(out / "03_training.ipynb")
        metrics = Run(tmp_path / "runs" / rec["run"]).metrics()
        assert rec["model"] == model
        assert rec["test_ndcg@10"] == metrics["test"][metrics["primary"]]["ndcg@10"]
        assert (len(rec.get("acc", [])) == 0) == (model == "sasrec")  # an ID model has no levels


@pytest.mark.slow
def test_notebooks_04_to_06_on_smoke_record_their_figures(tmp_path, monkeypatch):
    """Gates, streams, CRP and the dashboard on one run store: 05 reuses 04's runs, 06 reads
    them; every recorded figure is checked against what it must satisfy."""
    from glasskit.runs import Run

    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "out"
    every = {"first_codebooks": None,  # off in the main command, every section on here
             "gems_fusions": ["sum", "gate", "concat_memory", "concat_tokens"],
             "gems_streams": ["recent-only", "no-mid", "no-lifecycle"], "gems_budget": {}}
    crp_rows = {"rows": ["tiger", "sidtier+shs", "sidtier+shs+cr"]}  # 05 adds the third row
    build_reports({"profile": "smoke"}, out, only=["04", "05", "06"],
                  per_notebook={"04": every, "05": crp_rows})
    g = read_records(out / "04_gates_and_attention_streams.ipynb")
    assert set(g["runs"]) == {"[16, 8, 8]", "[8, 8, 8]"}  # Figure 4: twice the first level, and it
    for name in g["runs"]:
        t = g[f"gate_by_length {name}"]
        assert sum(t["count"]) > 0 and all(0 <= v <= 1 for v in t["mean_gate"])
        assert -1 <= g[f"gate_trend {name}"] <= 1 or g[f"gate_trend {name}"] is None
        assert all(0 <= v <= 1 for v in g[f"retrieved_share {name}"].values())
    assert 0 < g["short_mass_last3"] < 1
    assert set(g["gems_stream_shares"]) == {"sum", "gate", "concat_memory", "concat_tokens"}
    for shares in g["gems_stream_shares"].values():
        assert set(shares) == {"recent", "mid", "lifecycle"}
        assert sum(shares.values()) == pytest.approx(1, abs=1e-3)
    ablation = g["gems_stream_ablation"]
    assert set(ablation) == {"all streams", "recent-only", "no-mid", "no-lifecycle"}
    for row in ablation.values():
        hr = [row[f"Hrecall@{i}"] for i in range(1, 5)]
        assert hr == sorted(hr, reverse=True) and 0 <= row["hit@10"] <= 1

    c = read_records(out / "05_crp_analysis.ipynb")
    assert len(c["runs"]) == 3 and g["runs"]["[8, 8, 8]"] in c["runs"]  # reused, not retrained
    for row in ("tiger", "sidtier+shs", "sidtier+shs+cr"):
        hr = c[f"hrecall synthetic {row}"]
        assert len(c[f"crp synthetic {row}"]) == len(hr) == 4
        assert hr == sorted(hr, reverse=True)  # a prefix survives only if its parent did
        assert all(p is None or 0 <= p <= 1 for p in c[f"P_i synthetic {row}"])
    assert set(c["share_removed synthetic sidtier+shs"]) == {"2", "3", "4"}

    d = read_records(out / "06_ablation_dashboard.ipynb")
    assert d["dataset"] == "synthetic" and set(d["comparison"]) == {"tiger", "sidtier+shs",
                                                                     "sidtier+shs+cr", "gems"}
    assert d["missing_pairs"] == 7 * 3 - 4  # seven default rows, four trained for seed 0 by 04-05
    for name in d["runs"]:
        m = Run(tmp_path / "runs" / name).metrics()
        model = Run(tmp_path / "runs" / name).config.model
        label = "tiger" if name.startswith("tiger") else model.variant or model.name
        assert d["comparison"][label]["ndcg@10"] == round(m["test"]["masked"]["ndcg@10"], 4)

    for stem in ("04_gates_and_attention_streams", "05_crp_analysis", "06_ablation_dashboard"):
        page = (out / f"{stem}.html").read_text()
        assert f"<title>{stem}</title>" in page and page.count('src="plotly.min.js"') == 1
        assert "cdnjs" not in page and "cdn.jsdelivr" not in page  # offline
        assert len(page) < 2_000_000  # plotly.js is shared, not inlined
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    index = (out / "index.html").read_text()
    assert "Runs behind the reports" in index and g["runs"]["[8, 8, 8]"] in index


def test_per_notebook_parameters_are_checked(tmp_path, capsys):
    from glasskit.cli import main

    out = str(tmp_path / "out")
    assert main(["reports", "--profile", "smoke", "--only", "01", "--out", out,
                 "--param", "01:no_such_knob=1"]) == 2
    assert "01_data_preparation.ipynb has no parameter 'no_such_knob'" in capsys.readouterr().err
    assert main(["reports", "--profile", "smoke", "--only", "01", "--out", out,
                 "--param", "04:gems_streams=[]"]) == 2
    assert "no notebook numbered ['04'] among those run" in capsys.readouterr().err
    assert main(["reports", "--only", "01", "--out", out, "--param", "gems_streams"]) == 2
    assert "expected NN:NAME=VALUE" in capsys.readouterr().err
