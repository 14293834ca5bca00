"""Tokenization of 10k items (RQ-VAE vs RQ-KMeans) and the item x prototype cosine table for
100k items x 256 prototypes (time and peak memory), side by side in one run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import measure, table  # noqa: E402

from glasskit.config import TokenizerConfig  # noqa: E402
from glasskit.tokenize import build_sid_table, cosine_table, prototypes, sid_stats  # noqa: E402


def main(items: int = 10_000, table_items: int = 100_000, epochs: int = 50) -> None:
    """Tokenize ``items`` clustered vectors; the cosine table for ``table_items`` items."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 384))
    x = (centres[rng.integers(0, 200, items)] + rng.normal(size=(items, 384))).astype(np.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for method in ("rqkmeans", "rqvae"):
        cfg = TokenizerConfig(method=method, codebooks=[256, 256, 256], epochs=epochs, device=device)
        result = {}

        def run(cfg=cfg, result=result):
            result["table"], _ = build_sid_table(x, cfg, seed=0)

        sec, mib = measure(run, repeat=1)
        s = sid_stats(result["table"], x)
        rows.append({"method": method, "items": items, "seconds": sec, "peak_MiB": mib,
                     "perplexity_l0": s["usage"][0]["perplexity"],
                     "collision_rate": s["collision_rate"]})
    print(f"tokenization, {items} items x 384 dims, codebooks [256,256,256], device={device}")
    print(table(rows, "seconds"))

    emb = rng.normal(size=(table_items, 384)).astype(np.float32)
    first = rng.integers(0, 256, table_items)
    protos = prototypes(emb, first, 256)
    rows = []
    for chunk in (8192, 65536):
        sec, mib = measure(lambda chunk=chunk: cosine_table(emb, protos, chunk=chunk))
        rows.append({"items": table_items, "prototypes": 256, "chunk": chunk, "seconds": sec,
                     "peak_MiB": mib, "torch_tmp_MiB": 2 * chunk * 384 * 4 / 2**20})
    out_mib = table_items * 256 * 4 / 2**20
    print(f"item x prototype cosine table (float32; the output alone is {out_mib:.1f} MiB; peak_MiB")
    print("is what NumPy allocates, torch_tmp_MiB the untraced torch temporaries of one chunk)")
    print(table(rows, "seconds"))


if __name__ == "__main__":
    main()
