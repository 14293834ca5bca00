"""Every benchmark in bench/ runs at a small size (the benchmarks themselves take minutes): an
API change that breaks one fails here, not on the next ``make bench``. What each measures is
checked where it can be wrong at this size."""

import sys

from conftest import ROOT

import glasskit as gk
from glasskit.runs import Run

sys.path.insert(0, str(ROOT / "bench"))
import bench_data  # noqa: E402
import bench_gems_intrr  # noqa: E402
import bench_models  # noqa: E402
import bench_tokenize  # noqa: E402
import gpu_check  # noqa: E402
import valid_test_curves  # noqa: E402


def ratios(text: str) -> list[float]:
    return [float(w.split("=")[1]) for w in text.split() if w.startswith("ratio=")]


def test_data_benchmark_times_every_history_length(capsys):
    bench_data.main(lengths=(100, 1_000), total=4_000)
    out = capsys.readouterr().out
    assert "history=100" in out and "history=1000" in out and len(ratios(out)) == 2


def test_tokenize_benchmark_runs_both_tokenizers_and_the_cosine_table(capsys):
    bench_tokenize.main(items=600, table_items=2_000, epochs=2)
    out = capsys.readouterr().out
    assert "method=rqkmeans" in out and "method=rqvae" in out
    assert out.count("chunk=") == 2 and "the output alone is 2.0 MiB" in out


def test_model_benchmarks_run_on_long_histories_and_both_models(capsys):
    bench_models.long_history_precompute(histories=(100, 300), n=4)
    bench_models.speed(profile="smoke", steps=2)
    out = capsys.readouterr().out
    assert "history=300" in out and "model=tiger" in out and "model=glass" in out
    assert all(r > 0 for r in ratios(out))


def test_gems_block_benchmark_times_full_and_top_k_attention_on_both_paths():
    full, short, long = (bench_gems_intrr.block_worker(128, False),
                         bench_gems_intrr.block_worker(128, True),
                         bench_gems_intrr.block_worker(512, True))
    assert min(full["ms_per_step"], short["ms_per_step"], long["ms_per_step"]) > 0
    assert short["path"] == "masked fused" and long["path"] == "gathered"  # T above 8 k gathers


def test_intrr_tiger_benchmark_measures_every_beam():
    res = bench_gems_intrr.model_worker("intrr", profile="smoke")
    assert res["train_samples_per_s"] > 0 and res["params"] > 0
    assert all(res[f"infer_ms_beam{b}"] > 0 for b in bench_gems_intrr.BEAMS)


def test_indexer_quality_lies_between_random_keys_and_the_attention_s_own_top_k(tmp_path):
    from glasskit.train import train

    cfg = gk.configure("smoke", model="gems", **{"model.stages": [1, 1], "model.top_k": 8})
    run = train(cfg, out=tmp_path / "gems", progress=False)
    q = bench_gems_intrr.indexer_quality(str(run.path))
    assert q["queries"] > 0 and q["topk"] == 8
    # no k keys hold more of the attention than its own k largest weights
    assert 0 < q["mass_on_indexer_topk"] <= q["mass_on_best_topk"] + 1e-6 <= 1 + 1e-6
    assert q["mass_if_keys_were_random"] < q["mass_on_best_topk"]


def test_gpu_check_keeps_going_past_a_failing_row_and_writes_its_table_after_every_row(
        tmp_path, monkeypatch):
    """One broken model must not cost the GPU check its other rows (one lent machine, one try),
    and a check stopped by a timeout keeps the rows it finished: the table on disk names the
    failure, the finished row and the row skipped past ``--budget-s``."""
    import json


    done = {"row": "tiger", "device": "cuda", "precision": "bf16", "loss": 5.0, "wall_s": 1.0,
            "samples_per_s": 100.0, "ndcg@10": 0.05, "hit@10": 0.1, "fingerprint": "f",
            "run": str(tmp_path / "r"), "finite_loss": True, "step_flop": 10**9,
            "flop_per_s": 10**12}
    calls = []

    def fake_row(row, *args, **kwargs):
        calls.append(row)
        if row == "sasrec":
            raise RuntimeError("CUDA error: an illegal | memory access")
        clock[0] += 100.0  # each finished row takes 100 s of the budget
        return dict(done, row=row)

    clock = [0.0]
    monkeypatch.setattr(gpu_check, "check_row", fake_row)
    monkeypatch.setattr(gpu_check, "matmul_peak", lambda *a: 1.0)
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock[0])
    rc = gpu_check.main(["--device", "cpu", "--rows", "sasrec,dualgr,gems", "--no-tests",
                         "--budget-s", "50", "--out", str(tmp_path / "out")])
    assert rc == 1 and calls == ["sasrec", "dualgr"]  # gems starts past the budget
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [set(r) & {"error", "skipped", "loss"} for r in result["rows"]] == [
        {"error"}, {"loss"}, {"skipped"}]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| sasrec | RuntimeError: CUDA error: an illegal / memory access |" in table
    assert "| dualgr | bf16 |" in table and "| gems | past --budget-s 50.0 |" in table


def test_valid_test_curves_match_the_run_they_follow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    cfg = gk.profile("smoke", **{"train.epochs": 2})
    rows = valid_test_curves.curves(cfg, tmp_path / "r")
    m = Run(tmp_path / "r").metrics()
    assert [r["valid"] for r in rows] == [h["valid_ndcg@10"] for h in m["history"]]
    assert rows[m["best_epoch"] - 1]["test"] == m["test"][m["primary"]]["ndcg@10"]
    assert valid_test_curves.curves(cfg, tmp_path / "r") == rows  # resumed: nothing trained
    assert capsys.readouterr().out.count("epoch ") == 2
