"""Files: atomic writes (a crash mid-write never leaves a half-written artifact), strict JSON
(non-finite numbers are written as ``null``), reads that name a damaged file, and content
fingerprints that key caches and runs on what their inputs hold, not where they live."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON: NaN and infinities (e.g. a CRP level no sample reached) become ``null``."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, default=json_default, allow_nan=False)
    return write_text(path, text + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON ``null``: undefined)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    return obj


def read_json(path: str | Path, what: str = "") -> Any:
    """Parse a JSON file; a damaged one raises a GlasskitError naming it (and ``what`` to do)."""
    from glasskit.errors import GlasskitError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlasskitError(f"{path}: damaged JSON ({e}){'; ' + what if what else ''}") from None


@contextlib.contextmanager
def folder_lock(path: str | Path, what: str = "folder", option: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on the folder ``path`` (a ``.{name}.lock`` file beside it,
    released by the kernel however the process ends; the path is resolved first, so a symlink
    locks the folder it points to). A second process gets an error naming the holder. POSIX
    only; elsewhere folders are not locked."""
    from glasskit.errors import GlasskitError

    path = Path(path).resolve()
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                who = json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                who = {}
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who.get("since", 0)))
            raise GlasskitError(
                f"{path}: in use by process {who.get('pid', '?')} on {who.get('host', '?')} since "
                f"{since} ({who.get('command', '?')}); wait for it to finish or choose another "
                f"{what} ({option})") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                            "command": " ".join(sys.argv)[:300]}))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fingerprint(*parts: Any) -> str:
    """16-hex-digit digest of arrays, data frames, strings and JSON-able values, by content."""
    import pandas as pd

    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, pd.DataFrame):
            # pandas 3 reads text into its string dtype where pandas 2 reads object: hashed as
            # object, the same data has one digest under both (runs from either machine pair up)
            part = part.astype({c: object for c, t in part.dtypes.items()
                                if isinstance(t, pd.StringDtype)})
            h.update(json.dumps([list(map(str, part.columns)), [str(t) for t in part.dtypes]]).encode())
            h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
        elif isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes() if a.dtype != object else "\x1f".join(map(str, a.ravel())).encode())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=json_default).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def cache_dir() -> Path:
    """Where downloads, embeddings and tokenizer artifacts are cached (``$GLASSKIT_CACHE``)."""
    root = os.environ.get("GLASSKIT_CACHE") or Path.home() / ".cache" / "glasskit"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
