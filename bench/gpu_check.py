"""The GPU check (``make gpu-check``): everything glasskit does only on CUDA, in one command (69 s
on an H200, set-up included), with one JSON and one Markdown table as its result.

1. The CUDA-marked tests (``pytest -m cuda``).
2. The GPU's measured bf16 matmul peak (8192³ products).
3. Every model (TIGER, GLASS ``sidtier+shs``, SASRec, DualGR, GEMs, IntRR) trained for one epoch
   on ml-100k at the quick profile in bf16 on the GPU, then the same seed in fp32 on the CPU:
   the same data (fingerprint), finite losses, evaluation in fp32 on both, and the GPU's test
   NDCG@10 and Hit@10 within the band of the CPU's (``BAND``). GEMs is evaluated at its epoch-1
   checkpoint (``model.evaluate_any_stage``: one epoch never reaches its stage 3).
4. Per model: training samples/s on the GPU, the FLOP of one training step (torch's
   FlopCounterMode, forward and backward) and so the fraction of the measured bf16 peak.
5. GLASS / TIGER inference time per test user at beam 20.

On a GPU machine with its own Python and CUDA torch (no network): ``make gpu-prep`` here puts
the ml-100k files, the item embeddings and SID tables (``.gpu-prep/cache``, a GLASSKIT_CACHE)
and the wheels glasskit needs beside torch (``.gpu-prep/wheels``) into an ignored folder that
travels with the working tree; there ``bench/gpu_check.sh`` installs them and glasskit without
dependencies over that torch and runs this script. ``--device cpu --rows tiger`` runs the same
code path on a CPU (what the tests do, on the smoke profile).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("tiger", "glass:sidtier+shs", "sasrec", "dualgr", "gems", "intrr")
# GPU bf16 vs CPU fp32 after one epoch: |Δ| <= max(ABS, REL x the CPU's value)
BAND = {"abs": 0.01, "rel": 0.25}


def matmul_peak(device, n: int = 8192, reps: int = 20) -> float:
    """Measured bf16 matmul TFLOP/s (n³ products, best of ``reps`` after a warm-up)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_flops(cfg) -> int:
    """FLOP of one training step (forward and backward) on one batch, counted by torch."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from glasskit.pipeline import load, model_and_batcher, training_split
    from glasskit.train import make_optimizer, train_step

    ds, table = load(cfg)
    device = torch.device(cfg.train.device)
    model, batcher = model_and_batcher(cfg, ds, table, device)
    split = training_split(cfg, ds)
    batch = batcher.batch(split, np.arange(min(cfg.train.batch_size, len(ds.splits[split]))))
    opt = make_optimizer(model, cfg)
    train_step(model, batch, opt, cfg, device)  # warm-up (lazy initialisation)
    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, opt, cfg, device)
    return int(counter.get_total_flops())


def inference_ms(run, device: str) -> float:
    """Milliseconds per test user of beam search (the run's beam), best of two passes."""
    from glasskit.evaluation import evaluate, load_run_model

    model, batcher, _, cfg = load_run_model(run, device)
    n = len(batcher.ds.splits["test"])
    best = math.inf
    for _ in range(2):
        _sync(device)
        t = time.perf_counter()
        evaluate(model, batcher, "test", cfg, masked=True)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / n


def in_band(gpu: float, cpu: float) -> bool:
    return abs(gpu - cpu) <= max(BAND["abs"], BAND["rel"] * abs(cpu))


def check_row(row: str, profile: str, device: str, store: Path, compare_cpu: bool) -> dict:
    """Train ``row`` one epoch on ``device`` (bf16 where it is CUDA) and, with ``compare_cpu``,
    in fp32 on the CPU; the checks and figures of one table row."""
    import glasskit as gk
    from glasskit.train import train

    model, _, variant = row.partition(":")
    extra = {"train.epochs": 1}
    if model == "gems":
        extra["model.evaluate_any_stage"] = True
    on = {**extra, "train.device": device, "train.amp": "bf16" if device == "cuda" else "off"}
    cfg = gk.configure(profile, model=model, variant=variant or None, explicit=on)
    t = time.perf_counter()
    run = train(cfg, out=store / f"{row.replace(':', '-')}-{device}", progress=False)
    wall = time.perf_counter() - t
    m = run.metrics()
    ranking = m["primary"]
    out = {"row": row, "device": m["device"], "precision": m["train_precision"],
           "loss": m["history"][-1]["loss"], "wall_s": round(wall, 1),
           "samples_per_s": m["train_targets"] / m["train_seconds"],
           "ndcg@10": m["test"][ranking]["ndcg@10"], "hit@10": m["test"][ranking]["hit@10"],
           "fingerprint": run.info["data_fingerprint"], "run": str(run.path)}
    out["finite_loss"] = math.isfinite(out["loss"])
    out["step_flop"] = step_flops(cfg)
    out["flop_per_s"] = out["step_flop"] / cfg.train.batch_size * out["samples_per_s"]
    if compare_cpu:
        ref_cfg = gk.configure(profile, model=model, variant=variant or None,
                               explicit={**extra, "train.device": "cpu", "train.amp": "off"})
        ref = train(ref_cfg, out=store / f"{row.replace(':', '-')}-cpu-fp32", progress=False)
        rm = ref.metrics()
        out["cpu"] = {"ndcg@10": rm["test"][rm["primary"]]["ndcg@10"],
                      "hit@10": rm["test"][rm["primary"]]["hit@10"], "loss": rm["history"][-1]["loss"]}
        out["same_data"] = ref.info["data_fingerprint"] == out["fingerprint"]
        out["in_band"] = all(in_band(out[k], out["cpu"][k]) for k in ("ndcg@10", "hit@10"))
    return out


def cuda_tests(out_dir: Path, timeout_s: float = 240) -> dict:
    """``pytest -m cuda`` over tests/test_cuda.py (where every CUDA test lives; the other test
    files need plotting and scientific libraries the GPU machine lacks) in a subprocess: passed,
    failed and skipped counts and the tail."""
    try:
        res = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p",
                              "no:cacheprovider", "--junitxml", str(out_dir / "cuda-tests.xml"),
                              "tests/test_cuda.py"], cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"returncode": -1, "summary": f"timed out after {timeout_s:.0f} s"}
    tail = (res.stdout + res.stderr).strip().splitlines()[-1:] or [""]
    return {"returncode": res.returncode, "summary": tail[0]}


def markdown(result: dict) -> str:
    lines = [f"GPU check: {result['device_name']}, torch {result['torch']}, bf16 matmul peak "
             f"{result['peak_tflops']:.0f} TFLOP/s; CUDA tests: {result['cuda_tests']['summary']}",
             "", "| row | precision | loss | samples/s | fraction of bf16 peak | test NDCG@10 | CPU fp32 "
             "NDCG@10 | in band | same data |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "loss" not in r:  # a row that failed or was skipped
            why = str(r.get("error") or r.get("skipped")).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['row']} | {why[:300]} |" + " |" * 7)
            continue
        cpu = r.get("cpu", {})
        lines.append(f"| {r['row']} | {r['precision']} | {r['loss']:.3f} | {r['samples_per_s']:.0f} | "
                     f"{r['flop_per_s'] / 1e12 / result['peak_tflops']:.3f} | {r['ndcg@10']:.4f} | "
                     f"{cpu.get('ndcg@10', float('nan')):.4f} | {r.get('in_band', '-')} | "
                     f"{r.get('same_data', '-')} |")
    inf = result.get("inference_ms")
    if inf:
        lines += ["", f"Inference at beam {result['beam']}: TIGER {inf['tiger']:.2f} ms/user, GLASS "
                  f"{inf['glass:sidtier+shs']:.2f} ms/user (GLASS/TIGER "
                  f"{inf['glass:sidtier+shs'] / inf['tiger']:.2f})"]
    lines += ["", f"band: |GPU - CPU| <= max({BAND['abs']}, {BAND['rel']} x CPU) on test NDCG@10 and "
              "Hit@10 after one epoch"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results/gpu-check"))
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU fp32 comparison")
    p.add_argument("--no-tests", action="store_true", help="skip pytest -m cuda")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no further row after this many seconds (they are listed as skipped)")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: the GPU check needs one (run it on the GPU machine, or "
              "--device cpu to exercise its code path)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in args.rows.split(",") if r]
    result = {"torch": torch.__version__, "device": args.device, "profile": args.profile,
              "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "peak_tflops": matmul_peak(args.device, 8192 if args.device == "cuda" else 1024,
                                         20 if args.device == "cuda" else 3),
              "cuda_tests": {"summary": "skipped"} if args.no_tests else cuda_tests(out),
              "rows": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        for row in rows:
            t = time.perf_counter()
            if args.budget_s and t - start > args.budget_s:
                result["rows"].append({"row": row, "skipped": f"past --budget-s {args.budget_s}"})
            else:
                try:
                    result["rows"].append(check_row(row, args.profile, args.device, store,
                                                    compare_cpu=not args.no_cpu and args.device == "cuda"))
                except Exception as e:  # a failing row is a finding of the check, not its end
                    result["rows"].append({"row": row, "error": f"{type(e).__name__}: {e}"[:2000],
                                           "trace": traceback.format_exc()[-4000:]})
            print(f"{row}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            write(out, result)  # after every row: a check stopped by a timeout keeps its rows
        runs = {r["row"]: r["run"] for r in result["rows"] if "run" in r}
        if "tiger" in runs and "glass:sidtier+shs" in runs:
            from glasskit.runs import Run

            result["beam"] = Run(runs["tiger"]).config.train.beam
            try:
                result["inference_ms"] = {k: inference_ms(Run(runs[k]), args.device)
                                          for k in ("tiger", "glass:sidtier+shs")}
            except Exception as e:
                result["inference_error"] = f"{type(e).__name__}: {e}"[:2000]
    ok = all(r.get("finite_loss") and r.get("in_band", True) and r.get("same_data", True)
             for r in result["rows"])
    result["ok"] = ok and result["cuda_tests"].get("returncode", 0) == 0
    print(write(out, result))
    return 0 if result["ok"] else 1


def write(out: Path, result: dict) -> str:
    """Write gpu_check.json and gpu_check.md (each atomically); returns the table."""
    table = markdown(result)
    for name, text in (("gpu_check.json", json.dumps(result, indent=1, default=str)),
                       ("gpu_check.md", table + "\n")):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return table


if __name__ == "__main__":
    sys.exit(main())
