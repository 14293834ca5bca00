"""The run store: one directory per run with its config, metrics and checkpoints, and the
policy of what may be written where.

A run is created in a hidden temporary directory and renamed into place only when its first
files are written, and every later file is replaced atomically, so a crash never corrupts an
earlier run or leaves a half-written one in ``list_runs()``. Only a folder that is absent, empty
or a run is written into (:func:`check_run_folder`). Checkpoints hold tensors and plain data
only; one that names code is refused before any of it runs (:func:`load_checkpoint`). A
checkpoint keeps its optimizer state in a file of its own beside it (``last.pt`` and
``last.opt.pt``): the optimizer's moments are twice the model, and split this way each file of
even the largest model here (GEMs, 5.5 MB together) stays small enough to commit with a run
that a later session resumes. Both files record one token, so a pair is never mixed.

A run also keeps the SID table it trains against (``sids.npz``): the tokenizer is trained in
floats, so another processor or kernel setting can give other codes for the same items, and a
checkpoint means nothing against other codes. A resumed or re-evaluated run uses its own table,
and every checkpoint records the table's fingerprint, checked when it is loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from glasskit.config import Config
from glasskit.errors import GlasskitError
from glasskit.io import atomic_write, folder_lock, read_json, write_json


class SidTable(Protocol):
    """What the run store needs of a SID table (glasskit.tokenize.SidTable, a layer beside it)."""

    def fingerprint(self) -> str: ...

    def save(self, path: Path) -> None: ...


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


def results_root() -> Path | None:
    """The committed comparison store: ``$GLASSKIT_RESULTS`` (set empty: none); else
    ``results/runs`` of the source checkout, where ``make compare`` and ``make reproduce``
    train; None when it does not exist."""
    named = os.environ.get("GLASSKIT_RESULTS")
    if named is not None:
        return Path(named) if named else None
    store = CHECKOUT / "results" / "runs"
    return store if store.is_dir() else None


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


    def ranks(self) -> dict[str, np.ndarray]:
        """Per-user results of the evaluated checkpoint (see glasskit.evaluation.final_metrics):
        ``{split}_users`` and ``{split}_{masked|unmasked}`` target ranks."""
        p = self.path / "ranks.npz"
        if not p.is_file():
            raise GlasskitError(
                f"{self.path}: no per-user results (ranks.npz; runs finished before they were kept "
                f"have none): `python -m glasskit train --config {self.path / 'config.yaml'} --out "
                f"{self.path}` evaluates its best checkpoint again and writes them")
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


RUN_FILES = frozenset({"run.json", "config.yaml", "metrics.json", "best.pt", "last.pt",
                       "best.opt.pt", "last.opt.pt", "ranks.npz", "sids.npz"})


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
               data_fingerprint: str | None = None, sid_table: SidTable | None = None) -> Run:
    """Create ``root/name`` (default :func:`run_name`) holding the config, the fingerprint of
    the data it is built from and, when given, the SID table it trains against."""
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
        if sid_table is not None:
            sid_table.save(tmp / "sids.npz")
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
    """``{kind}-{dataset}[-{data name}]-{config hash}[-{data fingerprint}]-s{seed}``: a run is
    keyed on its config and on the content of its data; the data name (an s3rec file such as
    Toys_and_Games) is there for the reader."""
    data = f"-{data_fingerprint[:6]}" if data_fingerprint else ""
    name = f"-{re.sub(r'[^A-Za-z0-9_.]', '_', cfg.data.name)}" if cfg.data.name else ""
    return f"{kind}-{cfg.data.dataset}{name}-{cfg.hash()[:8]}{data}-s{cfg.seed}"


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


# -- checkpoints -------------------------------------------------------------------------------
def optimizer_file(path: Path) -> Path:
    """Where the checkpoint ``path`` keeps its optimizer state: ``last.pt`` → ``last.opt.pt``."""
    return path.with_suffix(".opt.pt")


def save_checkpoint(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically, its ``opt`` entry into :func:`optimizer_file` first; a
    failed write (a full disk) leaves the previous checkpoint. Crashing between the two files
    leaves a pair whose tokens differ, which :func:`load_checkpoint` calls damaged."""
    if "opt" in obj:
        token = uuid.uuid4().hex
        _save(optimizer_file(path), {"opt": obj["opt"], "token": token})
        obj = {**{k: v for k, v in obj.items() if k != "opt"}, "opt_token": token}
    _save(path, obj)


def _save(path: Path, obj: dict) -> None:
    try:
        atomic_write(path, lambda p: torch.save(obj, p))
    except (RuntimeError, OSError) as e:
        free = shutil.disk_usage(path.parent).free
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise GlasskitError(
            f"{path}: could not write the checkpoint ({why}); {free / 2**20:.0f} MiB are free on "
            f"that disk: if no space is left on the device, free some and run the same command "
            f"again to resume. The previous {path.name}, if any, is intact") from None


def checkpoint_state(model, opt, sched, state: dict, cfg: Config, data_fingerprint: str,
                     sid_fingerprint: str) -> dict:
    """Tensors and plain data only, so that loading never needs to unpickle code."""
    return {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
            "state": {**state, "history": list(state["history"])}, "config_hash": cfg.hash(),
            "data_fingerprint": data_fingerprint, "sid_fingerprint": sid_fingerprint,
            "model_name": cfg.model.name}


def load_checkpoint(path: Path, cfg: Config, device: torch.device,
                    data_fingerprint: str | None = None, table: SidTable | None = None,
                    optimizer: bool = False) -> dict:
    """A checkpoint of this config (and, when given, of this data and, for a model that reads
    semantic IDs, of this SID table), read with
    ``weights_only=True``: a file that names any class or function beyond tensors and plain
    data is refused (:class:`RefusedCheckpoint`) before any of it runs. With ``optimizer``
    (to resume) its ``opt`` entry is read too, from :func:`optimizer_file` where it was saved
    apart, and must carry the checkpoint's token."""
    if not path.is_file():
        raise GlasskitError(f"{path}: checkpoint not found")
    ckpt = _read(path, device)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DamagedCheckpoint(f"{path}: not a glasskit checkpoint")
    if ckpt.get("config_hash") != cfg.hash():
        raise GlasskitError(f"{path}: checkpoint was written for another config "
                            f"(hash {ckpt.get('config_hash')}, this config {cfg.hash()})")
    if data_fingerprint is not None and ckpt.get("data_fingerprint") != data_fingerprint:
        raise GlasskitError(f"{path}: checkpoint was trained on other data (fingerprint "
                            f"{ckpt.get('data_fingerprint')}, the data now {data_fingerprint}); "
                            "retrain with --fresh")
    if table is not None and ckpt.get("sid_fingerprint") != table.fingerprint():
        if "sid_fingerprint" not in ckpt:
            raise GlasskitError(
                f"{path}: the checkpoint does not record the SID table it was trained against "
                "(it was made before glasskit kept each run's table), and a table built again, "
                "on another processor or kernel setting, can give other codes: the checkpoint "
                "would be read against codes it never saw. Retrain the run with --fresh")
        raise GlasskitError(
            f"{path}: the checkpoint was trained against another SID table (fingerprint "
            f"{ckpt['sid_fingerprint']}, this table {table.fingerprint()}): the run's sids.npz "
            f"is missing or was replaced. Put the run's own sids.npz back beside it, or retrain "
            "with --fresh")
    if optimizer and "opt" not in ckpt:  # saved apart (a checkpoint from before keeps it inside)
        ckpt["opt"] = _optimizer_state(path, ckpt.get("opt_token"), device)
    return ckpt


def _read(path: Path, device: torch.device) -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # whatever torch raises, we decide from the file itself
        unsafe = unsafe_globals(path)
        if unsafe:
            raise RefusedCheckpoint(
                f"{path}: refused: it holds objects other than tensors and plain data (it names "
                f"{', '.join(unsafe[:3])}); glasskit never unpickles code from a run folder. Delete "
                "it, or retrain with --fresh") from None
        why = type(e).__name__ if "weights_only" in str(e) else (str(e).splitlines() or [""])[0]
        raise DamagedCheckpoint(f"{path}: damaged checkpoint ({why or type(e).__name__})") from None


def _optimizer_state(path: Path, token: str | None, device: torch.device) -> dict:
    """The optimizer state saved beside the checkpoint ``path``, checked to be its pair."""
    opt_path = optimizer_file(path)
    if not opt_path.is_file():
        raise DamagedCheckpoint(
            f"{path}: its optimizer state {opt_path.name} is missing (a run moved between "
            "machines needs last.pt, last.opt.pt, best.pt and best.opt.pt)")
    saved = _read(opt_path, device)
    if not isinstance(saved, dict) or "opt" not in saved:
        raise DamagedCheckpoint(f"{opt_path}: not a glasskit optimizer state")
    if token is None or saved.get("token") != token:
        raise DamagedCheckpoint(
            f"{path}: damaged checkpoint ({opt_path.name} is not its pair: one of the two was "
            "replaced, or a crash fell between their writes)")
    return saved["opt"]


def unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle names beyond what ``weights_only``
    loading allows, read statically (nothing is unpickled): torch's own scan for its zip
    format; for any other file, every global a pickle stream names. Empty for a file that is
    merely damaged."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        try:
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # an unreadable archive is damaged, not unsafe
            return []
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # the stream ends or breaks: what was named so far counts
        pass
    return names


class DamagedCheckpoint(GlasskitError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


class RefusedCheckpoint(GlasskitError):
    """A checkpoint that names code to run: never loaded, never fallen back from."""


def resume_checkpoint(path: Path, cfg: Config, device: torch.device, data_fingerprint: str,
                      table: SidTable | None) -> dict | None:
    """The checkpoint to resume from: last.pt, or best.pt with a warning when last.pt is
    damaged (resuming from the best epoch replays the later ones exactly: every epoch is
    reseeded). None when the run has no checkpoint yet."""
    last, best = path / "last.pt", path / "best.pt"
    if not last.is_file():
        return None
    try:
        return load_checkpoint(last, cfg, device, data_fingerprint, table, optimizer=True)
    except DamagedCheckpoint as e:
        if best.is_file():
            try:
                ckpt = load_checkpoint(best, cfg, device, data_fingerprint, table, optimizer=True)
            except DamagedCheckpoint:
                pass
            else:
                warnings.warn(f"{e}; resuming from {best.name} (epoch {ckpt['state']['epoch']})",
                              stacklevel=3)
                return ckpt
        raise GlasskitError(f"{e}, and no readable best.pt and best.opt.pt to fall back to; "
                            "start over with --fresh") from None


def open_run(cfg: Config, path: Path, resume: bool, data_fingerprint: str,
             sid_table: SidTable) -> Run:
    """The run folder: resumed when it holds this config's run on this data, else created
    (or, with ``resume=False``, replaced) with ``sid_table`` pinned in it (see
    :func:`glasskit.evaluation.run_sid_table`)."""
    if (path / "run.json").is_file():
        run = Run(path)
        if resume:
            info = run.info
            if info.get("config_hash") != cfg.hash():
                raise GlasskitError(f"{path}: holds a run of another config; choose another --out "
                                    "or pass --fresh to replace it")
            if info.get("data_fingerprint") != data_fingerprint:
                raise GlasskitError(
                    f"{path}: holds a run made from other data (fingerprint "
                    f"{info.get('data_fingerprint')}, the data now {data_fingerprint}): its results "
                    "do not describe this data; choose another --out or pass --fresh to retrain")
            _set_aside_damaged_metrics(run)
            return run
    return create_run(cfg, cfg.model.name, name=path.name, root=path.parent, overwrite=True,
                      data_fingerprint=data_fingerprint, sid_table=sid_table)


def finished_run(path: Path, cfg: Config, data_fingerprint: str) -> Run | None:
    """The run in ``path`` when it holds this config's finished run on this data, judged from
    its results alone: test metrics, per-user ranks and a history that met the stopping rule.
    So a run kept without its checkpoints (as ``results/runs`` keeps them) is reused, not
    trained again. None otherwise (training then resumes or refuses the folder as usual)."""
    if not (path / "run.json").is_file() or not (path / "ranks.npz").is_file():
        return None
    run = Run(path)
    info = run.info
    if info.get("config_hash") != cfg.hash() or info.get("data_fingerprint") != data_fingerprint:
        return None
    try:
        m = run.metrics()
    except GlasskitError:
        return None
    epochs, best = m.get("epochs_run"), m.get("best_epoch")
    if "test" not in m or epochs is None or best is None:
        return None
    return run if epochs >= cfg.train.epochs or epochs - best >= cfg.train.patience else None


def _set_aside_damaged_metrics(run: Run) -> None:
    """A damaged metrics.json is renamed (kept, hidden) so that resuming rebuilds it: the
    history from the checkpoint, the final metrics by evaluating the best checkpoint again."""

    try:
        run.metrics()
    except GlasskitError as e:
        kept = run.path / f".metrics.json.damaged-{int(time.time())}"
        os.replace(run.path / "metrics.json", kept)
        warnings.warn(f"{e}; kept as {kept.name}, rebuilding it from the checkpoints", stacklevel=4)
