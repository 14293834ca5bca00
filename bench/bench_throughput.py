"""Training throughput against the machine's limit, before and after, in one run.

1. The machine's fp32 and bf16 matmul GFLOP/s (2048 x 2048 products, torch's thread count).
2. For each code version (``--baseline REF``, checked out as a git worktree, and the working
   tree), a worker process on the quick profile (ml-100k) measures TIGER and GLASS
   (``sidtier+shs``): training samples/s (forward, backward, clipping, AdamW; the version's
   default autocast, and bf16 autocast where the version offers it on CPU), beam-20 inference
   ms per user, and the wall time of the whole ``train --epochs 1`` command (training,
   validation, test evaluation) for TIGER.
3. The analytic model FLOP per training sample (matmuls of forward + backward = 3 x forward,
   attention scores included, as if every token were computed densely) gives the achieved
   fraction of peak (MFU).

Usage: ``python bench/bench_throughput.py [--baseline 55ce29c] [--no-baseline] [--no-command]``.
The default baseline is the last commit before the speed work of issue 9.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "55ce29c"  # main before issue 9 (speed)
BATCH = 256


# -- analytic FLOPs ------------------------------------------------------------------------------
def _attn_flops(tq: int, tk: int, d: int, hk: int, kv_tokens: int | None = None) -> int:
    """Forward matmul FLOPs of one attention block: Q (tq), K/V (kv_tokens), scores, AV, out."""
    kv_tokens = tk if kv_tokens is None else kv_tokens
    return 2 * (tq * d * hk + kv_tokens * d * 2 * hk + 2 * tq * tk * hk + tq * hk * d)


def train_flops_per_sample(info: dict) -> float:
    """Forward + backward matmul FLOPs of one training sample (3 x forward)."""
    d, hk, ff = info["d"], info["heads"] * info["head_dim"], info["ff"]
    levels, S = len(info["sizes"]), info["short_len"]
    enc_tokens = S * levels + (1 if info.get("sid_tier") else 0)
    ffn = 2 * 2 * d * ff
    fwd = info["enc_layers"] * (_attn_flops(enc_tokens, enc_tokens, d, hk) + enc_tokens * ffn)
    T = levels  # decoder positions under teacher forcing: BOS + L-1 codes
    ret = info.get("ret_tokens", 0.0)
    per_dec = _attn_flops(T, T, d, hk) + _attn_flops(T, enc_tokens, d, hk) + T * ffn
    if info.get("hard_search"):
        per_dec += _attn_flops(T, int(round(ret)), d, hk) + 2 * T * 2 * d * d  # + gate W_g
    fwd += info["dec_layers"] * per_dec
    fwd += 2 * d * sum(info["sizes"])  # one output head per position
    if info.get("sid_tier"):
        fwd += 2 * (info["sizes"][0] * info["tiers"] * info["tier_hidden"] + info["tier_hidden"] * d)
    return 3.0 * fwd


def peak_gflops() -> dict[str, float]:
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(2048, 2048).to(dtype)
        a @ a
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * 2048**3 / best / 1e9
    return out


# -- worker: runs inside one code version ---------------------------------------------------------
def worker(steps: int, command: bool, profile: str = "quick") -> dict:
    import numpy as np
    import torch

    import glasskit as gk
    from glasskit.pipeline import load, model_and_batcher
    from glasskit.ranking import rank

    try:  # the working tree: one step function shared with the trainer
        from glasskit.train import make_optimizer, train_step
    except ImportError:
        make_optimizer = train_step = None

    results: dict = {"threads": torch.get_num_threads(), "models": {}}
    infer: dict = {}
    base = gk.profile(profile)
    amps = ["auto"]
    if train_step is not None:
        amps.append("bf16")
    for name, cfg in (("tiger", base), ("glass", gk.apply_variant(base, "sidtier+shs"))):
        ds, table = load(cfg)
        m = cfg.model
        rows: dict = {}
        for amp in amps:
            cfg_amp = cfg.replace(**{"train.amp": amp})
            torch.manual_seed(0)
            model, batcher = model_and_batcher(cfg_amp, ds, table, torch.device("cpu"))
            model.train()
            batches = [batcher.batch("train", np.arange(i, i + BATCH))
                       for i in range(0, BATCH * (steps + 1), BATCH)]
            if train_step is None:  # the baseline's loop body, as its trainer ran it
                from glasskit.models.layers import sid_loss
                from glasskit.train import autocast

                opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

                def step(b, model=model, opt=opt, cfg_amp=cfg_amp):
                    with autocast(torch.device("cpu"), cfg_amp.train.amp):
                        loss = sid_loss(model(b), b["target"])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
            else:
                opt = make_optimizer(model, cfg_amp)

                def step(b, model=model, opt=opt, cfg_amp=cfg_amp):
                    train_step(model, b, opt, cfg_amp, torch.device("cpu"))
            step(batches[0])
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for b in batches[1:]:
                    step(b)
                best = min(best, time.perf_counter() - t)
            rows[f"train_sps_{amp}"] = BATCH * steps / best
        # retrieved tokens per sample (target's first code), as the version retrieves them
        b = batches[1]
        ret = 0.0
        if "long_offsets" in b:
            off, first = b["long_offsets"], b["target"][:, 0]
            n = (off.gather(1, first[:, None] + 1) - off.gather(1, first[:, None])).float()
            cap = getattr(m, "retrieve_max", None)
            if cap:
                n = n.clamp_max(cap)
            ret = float(n.mean()) * table.levels
        model.eval()
        users = np.arange(min(BATCH, len(ds.splits["test"])))
        infer[name] = (model, table.index("cpu"), batcher.batch("test", users))
        rows["info"] = {"d": m.d_model, "heads": m.heads, "head_dim": m.head_dim, "ff": m.ff,
                        "enc_layers": m.enc_layers, "dec_layers": m.dec_layers,
                        "short_len": cfg.data.short_len, "sizes": list(table.sizes),
                        "ret_tokens": ret}
        if name == "glass":  # GLASS's own settings (a TIGER config has none of them)
            rows["info"].update(sid_tier=m.sid_tier, tiers=m.tiers, tier_hidden=m.tier_hidden,
                                hard_search=m.hard_search)
        results["models"][name] = rows
    # beam-20 inference, the models alternating so that their ratio is taken side by side
    best = dict.fromkeys(infer, float("inf"))
    with torch.no_grad():
        for rep in range(6):
            for name, (model, index, tb) in infer.items():
                t = time.perf_counter()
                rank(model, "sid", tb, index, 20, 20)
                if rep:  # the first round warms up
                    best[name] = min(best[name], time.perf_counter() - t)
    for name, (_, _, tb) in infer.items():
        results["models"][name]["infer_ms_per_user"] = 1e3 * best[name] / len(tb["user"])
    if command:
        out = Path(tempfile.mkdtemp(prefix="bench-epoch1-"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "glasskit", "train", "--model", "tiger", "--epochs", "1",
                        "--out", str(out / "run"), "--fresh", "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
        results["epoch1_command_s"] = time.perf_counter() - t
        shutil.rmtree(out, ignore_errors=True)
    return results


def run_version(root: Path, label: str, steps: int, command: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root),
           "GLASSKIT_CACHE": str(ROOT / ".cache" / "bench" / label)}
    env.pop("GLASSKIT_RUNS", None)
    # warm the version's caches (data, embeddings, SID tables) outside the timings
    for variant in ([], ["--codebooks", "64,128,128"]):
        subprocess.run([sys.executable, "-m", "glasskit", "tokenize", *variant], cwd=root, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           "--steps", str(steps)] + ([] if command else ["--no-command"]),
                          cwd=root, env=env, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline_tree(ref: str) -> Path:
    path = ROOT / ".cache" / "bench" / f"tree-{ref}"
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                       check=True, capture_output=True)
    return path


def report(peak: dict, versions: dict[str, dict]) -> None:
    import torch

    print(f"machine: {torch.get_num_threads()} torch threads; matmul peak fp32 {peak['fp32']:.0f} "
          f"GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"quick profile, ml-100k, batch {BATCH}, CPU")
    head = (f"{'version':10s} {'model':6s} {'amp':5s} {'samples/s':>10s} {'MFLOP/smp':>10s} "
            f"{'GFLOP/s':>8s} {'MFU fp32':>9s} {'MFU bf16':>9s} {'x base':>7s}")
    print(head)
    first = next(iter(versions.values()))
    for label, res in versions.items():
        for model, rows in res["models"].items():
            flop = train_flops_per_sample(rows["info"])
            base_sps = first["models"][model]["train_sps_auto"]
            for key in sorted(k for k in rows if k.startswith("train_sps_")):
                sps = rows[key]
                gf = sps * flop / 1e9
                print(f"{label:10s} {model:6s} {key.removeprefix('train_sps_'):5s} {sps:10.0f} "
                      f"{flop / 1e6:10.1f} {gf:8.1f} {gf / peak['fp32']:9.1%} {gf / peak['bf16']:9.1%} "
                      f"{sps / base_sps:7.2f}")
    print("\nbeam-20 inference, 256 test users (fp32)")
    for label, res in versions.items():
        t, g = (res["models"][m]["infer_ms_per_user"] for m in ("tiger", "glass"))
        base = first["models"]["tiger"]["infer_ms_per_user"]
        print(f"{label:10s} tiger {t:6.2f} ms/user  glass {g:6.2f} ms/user  glass/tiger {g / t:5.2f}"
              f"  tiger x base {base / t:5.2f}")
    if all("epoch1_command_s" in r for r in versions.values()):
        print("\n`train --model tiger --epochs 1` on ml-100k quick (train + valid + test), wall s")
        base = first["epoch1_command_s"]
        for label, res in versions.items():
            s = res["epoch1_command_s"]
            print(f"{label:10s} {s:6.1f} s   speed-up x{base / s:4.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--no-command", action="store_true")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--worker", action="store_true")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, not args.no_command)))
        return
    peak = peak_gflops()
    versions = {}
    if not args.no_baseline:
        versions[f"base {args.baseline}"[:10]] = run_version(baseline_tree(args.baseline), args.baseline,
                                                             args.steps, not args.no_command)
    versions["now"] = run_version(ROOT, "now", args.steps, not args.no_command)
    report(peak, versions)


if __name__ == "__main__":
    main()
