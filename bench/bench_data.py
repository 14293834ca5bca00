"""Sequence building, split and window bounds for histories of 1k, 10k and 100k items.

The per-sample work must grow linearly with the history: the printed ratios (time per
interaction relative to the 1k row) stay near 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import measure, table  # noqa: E402

from glasskit.config import SyntheticConfig  # noqa: E402
from glasskit.data import build_sequences, check_no_leakage, split_samples  # noqa: E402
from glasskit.data.synthetic import generate  # noqa: E402


def main(lengths: tuple[int, ...] = (1_000, 10_000, 100_000), total: int = 200_000) -> None:
    """Time ``total`` interactions split into users of each history length."""
    rows = []
    for length in lengths:
        users = max(2, total // length)
        raw = generate(SyntheticConfig(users=users, items=4096, min_len=length, max_len=length), 0)
        inter = raw.interactions

        def run(inter=inter):
            seqs = build_sequences(inter)
            splits = split_samples(seqs)
            check_no_leakage(seqs, splits, 50, 1000)

        sec, mib = measure(run)
        rows.append({"history": length, "users": users, "seconds": sec, "peak_MiB": mib,
                     "us_per_interaction": 1e6 * sec / len(inter)})
    print("sequences + split + leakage check (all samples)")
    print(table(rows, "us_per_interaction"))


if __name__ == "__main__":
    main()
