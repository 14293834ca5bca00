"""Benchmark helpers: best-of-n timing and peak traced memory, printed side by side."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable


def measure(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """(best wall seconds over ``repeat`` runs, peak MiB allocated by Python/NumPy in one run)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 2**20


def table(rows: list[dict], base_key: str, base_row: int = 0) -> str:
    """Format rows as a table with each timing also given as a ratio to the first row."""
    base = rows[base_row][base_key]
    lines = []
    for r in rows:
        cells = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()]
        lines.append("  ".join(cells) + f"  ratio={r[base_key] / base:.2f}")
    return "\n".join(lines)
