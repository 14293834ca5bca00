"""The run store: one directory per run with its config, metrics and artifacts.

A run is created in a hidden temporary directory and renamed into place only when its first
files are written, and every later file is replaced atomically, so a crash never corrupts an
earlier run or leaves a half-written one in ``list_runs()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from glasskit.config import Config
from glasskit.errors import GlasskitError
from glasskit.io import folder_lock, read_json, write_json

CHECKOUT = Path(__file__).resolve().parent.parent


def runs_root() -> Path:
    """Where runs live: ``$GLASSKIT_RUNS``; else, when glasskit is used from its source
    checkout, the checkout's ``runs/`` (one store for the CLI, ``make reports`` and notebooks
    opened in JupyterLab, whatever their working directory); else ``./runs``."""
    if os.environ.get("GLASSKIT_RUNS"):
        return Path(os.environ["GLASSKIT_RUNS"])
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "notebooks").is_dir():
        return CHECKOUT / "runs"
    return Path("runs")


class Run:
    """A finished or running run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "run.json").is_file():
            raise GlasskitError(f"{self.path}: not a run directory (no run.json)")

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / "run.json", "the run's identity is lost; retrain it")

    @property
    def config(self) -> Config:
        from glasskit.config import load_config

        return load_config(self.path / "config.yaml")

    def metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return read_json(p, f"re-create it with `python -m glasskit train --config "
                            f"{self.path / 'config.yaml'} --out {self.path}` (a finished run "
                            "re-evaluates its best checkpoint)") if p.is_file() else {}

    def log_metrics(self, **metrics: Any) -> None:
        """Merge ``metrics`` into metrics.json (atomically)."""
        merged = self.metrics()
        merged.update(metrics)
        write_json(self.path / "metrics.json", merged)

    def artifact(self, name: str) -> Path:
        """Path for an artifact inside the run; write it with :mod:`glasskit.io` helpers."""
        return self.path / name


RUN_FILES = frozenset({"run.json", "config.yaml", "metrics.json", "best.pt", "last.pt"})


def check_run_folder(path: str | Path, replace: bool = False) -> Path:
    """Refuse, before anything is written, a run folder that is not glasskit's to write: it
    must be absent, empty, or a run folder (one holding ``run.json``). ``replace`` (``--fresh``)
    clears a run folder, so it also refuses one holding files that a run never writes. Returns
    the path resolved (a symlink to a run folder is that folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GlasskitError(f"{path}: is a file, not a run folder; nothing was changed. train writes "
                            "a run into a folder that is absent, empty or holds a run: choose "
                            "another --out")
    path = path.resolve()
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if entries and not (path / "run.json").is_file():
        raise GlasskitError(
            f"{path}: holds files that are not a glasskit run ({_names(entries)}); nothing was "
            "changed. train writes only into a folder that is absent, empty or holds a run: "
            "choose another --out")
    foreign = [n for n in entries if n not in RUN_FILES and not n.startswith(".")]
    if replace and foreign:
        raise GlasskitError(
            f"{path}: --fresh would replace this run folder, which also holds {_names(foreign)} "
            "that a run never writes; nothing was changed. Move them out, or choose another --out")
    return path


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def create_run(cfg: Config, kind: str, name: str | None = None,
               root: str | Path | None = None, overwrite: bool = False,
               data_fingerprint: str | None = None) -> Run:
    """Create ``root/name`` (default :func:`run_name`) holding the config and the fingerprint of
    the data it is built from."""
    root = Path(root) if root is not None else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    name = name or run_name(cfg, kind, data_fingerprint)
    final = root / name
    if final.exists() and not overwrite:
        raise GlasskitError(f"{final}: run exists (pass overwrite=True to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    tmp.chmod(0o755)
    try:
        cfg.to_yaml(tmp / "config.yaml")
        write_json(tmp / "run.json", {"name": name, "kind": kind, "created": time.time(),
                                      "config_hash": cfg.hash(), "data_fingerprint": data_fingerprint,
                                      "profile": cfg.profile, "dataset": cfg.data.dataset,
                                      "seed": cfg.seed})
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


def run_name(cfg: Config, kind: str, data_fingerprint: str | None = None) -> str:
    """``{kind}-{dataset}-{config hash}[-{data fingerprint}]-s{seed}``: a run is keyed on its
    config and on the content of its data."""
    data = f"-{data_fingerprint[:6]}" if data_fingerprint else ""
    return f"{kind}-{cfg.data.dataset}-{cfg.hash()[:8]}{data}-s{cfg.seed}"


def run_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on the run folder ``path`` (see :func:`glasskit.io.folder_lock`)."""
    return folder_lock(path, "run folder", "--out")


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
