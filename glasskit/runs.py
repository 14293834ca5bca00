"""The run store: one directory per run with its config, metrics and artifacts.

A run is created in a hidden temporary directory and renamed into place only when its first
files are written, and every later file is replaced atomically, so a crash never corrupts an
earlier run or leaves a half-written one in ``list_runs()``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from glasskit.config import Config
from glasskit.errors import GlasskitError
from glasskit.io import read_json, write_json


def runs_root() -> Path:
    """Where runs live: ``$GLASSKIT_RUNS`` or ``./runs``."""
    return Path(os.environ.get("GLASSKIT_RUNS", "runs"))


class Run:
    """A finished or running run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "run.json").is_file():
            raise GlasskitError(f"{self.path}: not a run directory (no run.json)")

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / "run.json")

    @property
    def config(self) -> Config:
        from glasskit.config import load_config

        return load_config(self.path / "config.yaml")

    def metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return read_json(p) if p.is_file() else {}

    def log_metrics(self, **metrics: Any) -> None:
        """Merge ``metrics`` into metrics.json (atomically)."""
        merged = self.metrics()
        merged.update(metrics)
        write_json(self.path / "metrics.json", merged)

    def artifact(self, name: str) -> Path:
        """Path for an artifact inside the run; write it with :mod:`glasskit.io` helpers."""
        return self.path / name


def create_run(cfg: Config, kind: str, name: str | None = None,
               root: str | Path | None = None, overwrite: bool = False) -> Run:
    """Create ``root/name`` (default ``{kind}-{dataset}-{hash}-s{seed}``) holding the config."""
    root = Path(root) if root is not None else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    name = name or run_name(cfg, kind)
    final = root / name
    if final.exists() and not overwrite:
        raise GlasskitError(f"{final}: run exists (pass overwrite=True to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    tmp.chmod(0o755)
    try:
        cfg.to_yaml(tmp / "config.yaml")
        write_json(tmp / "run.json", {"name": name, "kind": kind, "created": time.time(),
                                      "config_hash": cfg.hash(), "profile": cfg.profile,
                                      "dataset": cfg.data.dataset, "seed": cfg.seed})
        if final.exists():
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def run_name(cfg: Config, kind: str) -> str:
    return f"{kind}-{cfg.data.dataset}-{cfg.hash()[:8]}-s{cfg.seed}"


def list_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per complete run: name, kind, dataset, profile, seed, created and the scalar
    metrics (flattened as ``split/metric``)."""
    rows = []
    root = Path(root) if root is not None else runs_root()
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.name.startswith(".") or not (p / "run.json").is_file():
            continue
        run = Run(p)
        row = {"path": str(p), **run.info}
        for key, value in flatten(run.metrics()).items():
            if isinstance(value, int | float):
                row[key] = value
        rows.append(row)
    cols = ["name", "kind", "dataset", "profile", "seed", "created", "config_hash", "path"]
    df = pd.DataFrame(rows, columns=None if rows else cols)
    if rows:
        df["created"] = pd.to_datetime(df["created"], unit="s")
    return df


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with ``a/b/c`` keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out
