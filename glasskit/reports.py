"""Execute the numbered notebooks headlessly with papermill into ``reports/``.

Each notebook is executed into a temporary file and moved into place only when it succeeds,
so a failing notebook stops the run with the notebook, cell and error named while every
earlier report stays as it was. ``manifest.json`` records, per notebook, its last successful
build (parameters, time, duration) and its last attempt (ok, or failed with the cell named);
``index.html`` is built from it and marks a report built with other parameters than the
latest request as stale.
"""

from __future__ import annotations

import html
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glasskit.errors import GlasskitError
from glasskit.io import atomic_write, folder_lock, read_json, write_json, write_text

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


class NotebookFailed(GlasskitError):
    """A notebook cell raised while building the reports."""

    def __init__(self, message: str, cell: str = ""):
        super().__init__(message)
        self.cell = cell


@dataclass
class ReportResult:
    notebook: str
    seconds: float
    records: dict[str, Any]


def find_notebooks(folder: Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks of ``folder``, or those ``only`` names. Without ``only``, a
    notebook whose metadata says ``glasskit.default: false`` (07, the hours-long reproduction)
    is left out of the main command."""
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        books = [p for p in books if _in_default(p)]
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            raise GlasskitError(f"--only: no notebook numbered {sorted(unknown)} in {folder}")
        books = [p for p in books if p.name[:2] in wanted]
    if not books:
        raise GlasskitError(f"no notebooks found in {folder}")
    return books


def _in_default(path: Path) -> bool:
    import json

    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return meta.get("glasskit", {}).get("default", True)


TEMPLATES = Path(__file__).resolve().parent / "templates"
CELL_TIMEOUT = 4 * 3600  # seconds per cell: a hung kernel fails the report instead of waiting forever


class _Progress(logging.Handler):
    """papermill's log as terminal progress: ``[02_tokenization +41s] Executing Cell 5`` and
    the kernel's own output lines (training epochs, stop reasons)."""

    def __init__(self, label: str, stream):
        super().__init__(logging.INFO)
        self.label, self.stream, self.start = label, stream, time.time()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip()
        if not text or text.startswith(("Executing notebook with kernel", "Ending Cell")):
            return
        text = text.replace("Executing Cell ", "cell ").rstrip("-")
        for line in text.splitlines()[-3:]:
            print(f"[{self.label} +{time.time() - self.start:.0f}s] {line[:160]}", file=self.stream,
                  flush=True)


def run_notebook(src: Path, out_dir: Path, parameters: dict[str, Any],
                 log_output: bool = False, stream=None, own: dict[str, Any] | None = None
                 ) -> ReportResult:
    """Execute one notebook with the parameters it declares; write .ipynb and .html. ``own``
    holds parameters meant for this notebook alone: each must be one it declares. With a
    ``stream``, progress (cell, output lines, elapsed time) is printed to it as it happens."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    declared = pm.inspect_notebook(str(src))
    unknown = [k for k in parameters if k not in declared]
    params = {k: v for k, v in parameters.items() if k in declared}
    for k, v in (own or {}).items():
        if k not in declared:
            raise GlasskitError(f"--param {src.name[:2]}:{k}: {src.name} has no parameter {k!r} "
                                f"(it declares {', '.join(sorted(declared))})")
        params[k] = v
    if "live" in declared:  # headless: no live widgets (their output routing can block nbclient)
        params["live"] = False
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{src.stem}.running.ipynb"
    start = time.time()
    logger = logging.getLogger("papermill")
    handler = _Progress(src.stem, stream) if stream is not None else None
    if handler is not None:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=False,
                            log_output=log_output or handler is not None, report_mode=False,
                            execution_timeout=CELL_TIMEOUT)
    except PapermillExecutionError as e:
        failed = out_dir / f"{src.stem}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        cell = f"cell {e.exec_count} (index {e.cell_index}) raised {e.ename}: {e.evalue}"
        raise NotebookFailed(f"{src.name}: {cell}\nexecuted notebook kept at {failed}; earlier "
                             "reports are unchanged", cell=cell) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if handler is not None:
            logger.removeHandler(handler)
    seconds = time.time() - start
    return _publish(src, tmp, out_dir, seconds, unknown)


def _publish(src: Path, executed: Path, out_dir: Path, seconds: float,
             unused: list[str]) -> ReportResult:
    import nbformat
    from nbconvert import HTMLExporter

    from glasskit.notebook import read_records

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="glasskit_html")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": src.stem}})
    atomic_write(out_dir / f"{src.stem}.html", lambda p: p.write_text(body, encoding="utf-8"))
    _write_plotlyjs(out_dir)
    os.replace(executed, out_dir / src.name)
    (out_dir / f"{src.stem}.failed.ipynb").unlink(missing_ok=True)
    records = read_records(out_dir / src.name)
    if unused:
        records = {**records, "_unused_parameters": unused}
    return ReportResult(src.name, seconds, records)


def _write_plotlyjs(out_dir: Path) -> None:
    """plotly.js once per reports folder, shared by every export (offline, no CDN)."""
    import plotly
    from plotly.offline import get_plotlyjs

    path, stamp = out_dir / "plotly.min.js", out_dir / ".plotly-version"
    if not path.is_file() or not stamp.is_file() or stamp.read_text() != plotly.__version__:
        write_text(path, get_plotlyjs())
        write_text(stamp, plotly.__version__)


def build_reports(parameters: dict[str, Any], out_dir: str | Path = "reports",
                  only: list[str] | None = None, folder: Path = NOTEBOOKS,
                  stream=sys.stderr, per_notebook: dict[str, dict[str, Any]] | None = None
                  ) -> list[ReportResult]:
    """Execute the notebooks (``only``: their numbers) with the common ``parameters`` and, for
    notebook NN, ``per_notebook[NN]``."""
    books = find_notebooks(folder, only)
    per_notebook = per_notebook or {}
    missing = set(per_notebook) - {b.name[:2] for b in books}
    if missing:
        raise GlasskitError(f"--param: no notebook numbered {sorted(missing)} among those run")
    out = check_reports_folder(Path(out_dir))  # nothing is created before the checks pass
    with folder_lock(out, "reports folder", "--out"):
        return _build(parameters, out, books, stream, per_notebook)


def check_reports_folder(out: Path) -> Path:
    """A reports folder must be absent, empty, the checkout's own ``reports/``, or one that a
    build made (it holds ``manifest.json``): reports never write among a user's files."""
    if out.exists() and not out.is_dir():
        raise GlasskitError(f"{out}: is a file, not a reports folder; nothing was changed. Choose "
                            "another --out (a folder that is absent, empty or holds reports)")
    out = out.resolve()
    if (out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file()
            and out != NOTEBOOKS.parent / "reports"):
        raise GlasskitError(f"{out}: holds files but no reports (no manifest.json); nothing was "
                            "changed. Choose another --out (a folder that is absent, empty or "
                            "holds reports)")
    return out


def _build(parameters: dict[str, Any], out: Path, books: list[Path], stream,
           per_notebook: dict[str, dict[str, Any]]) -> list[ReportResult]:
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    manifest["requested"] = {"parameters": parameters, "per_notebook": per_notebook,
                             "at": time.time()}
    results: list[ReportResult] = []
    for i, nb in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {nb.name} ...", file=stream, flush=True)
        entry = manifest["notebooks"].setdefault(nb.stem, {})
        started = time.time()
        own = per_notebook.get(nb.name[:2], {})
        used = {**parameters, **own}
        try:
            res = run_notebook(nb, out, parameters, stream=stream, own=own)
        except NotebookFailed as e:
            entry["attempt"] = {"status": "failed", "cell": e.cell, "parameters": used,
                                "at": started, "seconds": time.time() - started}
            _save_manifest(out, manifest)
            raise
        print(f"[{i}/{len(books)}] {nb.name} done in {res.seconds:.1f}s", file=stream, flush=True)
        entry["attempt"] = entry["ok"] = {"status": "ok", "parameters": used, "at": started,
                                          "seconds": res.seconds}
        _save_manifest(out, manifest)
        results.append(res)
    return results


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """``manifest.json`` of a reports folder (empty when missing; damaged: rebuilt empty with
    a warning, as the reports themselves are intact)."""
    path = Path(out_dir) / "manifest.json"
    if path.is_file():
        try:
            m = read_json(path)
            if isinstance(m, dict) and isinstance(m.get("notebooks"), dict):
                return m
        except GlasskitError:
            pass
        import warnings

        warnings.warn(f"{path}: damaged; starting a new one", stacklevel=2)
    return {"notebooks": {}, "requested": {}}


def _save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_json(out / "manifest.json", manifest)
    write_index(out)


def report_status(entry: dict[str, Any], requested: dict[str, Any], number: str = "") -> str:
    """ok, stale (built with other parameters than the latest request asked of notebook
    ``number``: the common ones and its own) or failed (cell)."""
    attempt = entry.get("attempt", {})
    if attempt.get("status") == "failed":
        return f"failed: {attempt.get('cell', '')}"
    ok = entry.get("ok")
    if ok is None:
        return "not built"
    wanted = {**(requested.get("parameters") or {}),
              **(requested.get("per_notebook") or {}).get(number, {})}
    return "ok" if ok.get("parameters") == wanted else "stale"


def write_index(out_dir: Path) -> Path:
    """``index.html``: per notebook its status, the parameters and time its report was built
    with, its duration, and its recorded figures."""
    from glasskit.notebook import read_records

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    requested = manifest.get("requested", {})

    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""

    def params(p: dict | None) -> str:
        return html.escape(", ".join(f"{k}={v}" for k, v in (p or {}).items()))

    rows, used = [], {}
    for stem, entry in sorted(manifest["notebooks"].items()):
        status = report_status(entry, requested, stem[:2])
        ok = entry.get("ok") or {}
        nb = out_dir / f"{stem}.ipynb"
        rec = read_records(nb) if nb.is_file() and ok else {}
        for name in _run_names(rec):
            used.setdefault(name, stem)
        shown = "; ".join(f"{k} = {_fmt(v)}" for k, v in rec.items() if k not in ("run", "runs"))
        link = (f"<a href='{stem}.html'>{html.escape(stem)}</a> (<a href='{stem}.ipynb'>ipynb</a>)"
                if ok else html.escape(stem))
        if status.startswith("failed"):
            link += f" <a href='{stem}.failed.ipynb'>failed run</a>"
        css = "ok" if status == "ok" else "bad" if status.startswith("failed") else "stale"
        rows.append(f"<tr><td>{link}</td><td class='{css}'>{html.escape(status)}</td>"
                    f"<td>{params(ok.get('parameters'))}</td><td>{when(ok.get('at'))}</td>"
                    f"<td>{ok.get('seconds', 0):.0f} s</td>"
                    f"<td><small>{html.escape(shown[:600])}</small></td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>glasskit reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;
vertical-align:top;text-align:left}}.ok{{color:#1a7f37}}.bad{{color:#cf222e}}.stale{{color:#9a6700}}
</style></head><body><h1>glasskit reports</h1>
<p>Latest request: {params(requested.get('parameters'))} at {when(requested.get('at'))}.
A report marked <span class="stale">stale</span> was built with other parameters.</p>
<table><tr><th>report</th><th>status</th><th>built with</th><th>built at</th><th>took</th>
<th>recorded figures</th></tr>
{''.join(rows)}</table>
{headline_table(used)}</body></html>
"""
    return write_text(out_dir / "index.html", page)


def _run_names(records: dict[str, Any]) -> list[str]:
    """Run folder names a notebook recorded under ``run`` or ``runs`` (a name, list or dict)."""
    out = []
    for key in ("run", "runs"):
        v = records.get(key)
        vals = v.values() if isinstance(v, dict) else v if isinstance(v, list) else [v] if v else []
        out += [Path(str(x)).name for x in vals]
    return out


def _fmt(v: Any) -> str:
    """A recorded value, compactly: floats to 4 digits, lists and dicts element-wise."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v[:12]) + (", ..." if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:12]) + "}"
    return str(v)


def headline_table(used: dict[str, str]) -> str:
    """Model rows x Hit@10 / NDCG@10 (test, primary ranking) of the runs the reports used, with
    their seed and a link to each run's metrics."""
    from glasskit.analysis.run_tables import row_label
    from glasskit.runs import Run, runs_root

    lines = []
    for name, stem in used.items():
        path = runs_root() / name
        try:
            run = Run(path)
            m = run.metrics()
            t = m["test"][m["primary"]]
        except (GlasskitError, KeyError):
            continue
        lines.append((run.info.get("dataset", ""), row_label(run), run.info.get("seed"),
                      t["hit@10"], t["ndcg@10"], m["primary"], path, stem))
    if not lines:
        return ""
    lines.sort(key=lambda r: (r[0], r[1], r[2]))
    body = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{html.escape(r)}</td><td>{s}</td><td>{h:.4f}</td>"
        f"<td>{n:.4f}</td><td>{p}</td><td><a href='{html.escape(path.resolve().as_uri())}/metrics.json'>"
        f"{html.escape(path.name)}</a></td><td>{html.escape(stem)}</td></tr>"
        for d, r, s, h, n, p, path, stem in lines)
    return ("<h2>Runs behind the reports (test)</h2><table><tr><th>dataset</th><th>row</th>"
            "<th>seed</th><th>Hit@10</th><th>NDCG@10</th><th>ranking</th><th>run</th><th>first used in"
            f"</th></tr>{body}</table>")
