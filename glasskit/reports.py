"""Execute the numbered notebooks headlessly with papermill into ``reports/``.

Each notebook is executed into a temporary file and moved into place only when it succeeds,
so a failing notebook stops the run with the notebook, cell and error named while every
earlier report stays as it was.
"""

from __future__ import annotations

import html
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glasskit.errors import GlasskitError
from glasskit.io import atomic_write, write_text

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


class NotebookFailed(GlasskitError):
    """A notebook cell raised while building the reports."""


@dataclass
class ReportResult:
    notebook: str
    seconds: float
    records: dict[str, Any]


def find_notebooks(folder: Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            raise GlasskitError(f"--only: no notebook numbered {sorted(unknown)} in {folder}")
        books = [p for p in books if p.name[:2] in wanted]
    if not books:
        raise GlasskitError(f"no notebooks found in {folder}")
    return books


def run_notebook(src: Path, out_dir: Path, parameters: dict[str, Any],
                 log_output: bool = False) -> ReportResult:
    """Execute one notebook with the parameters it declares; write .ipynb and .html."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    declared = pm.inspect_notebook(str(src))
    unknown = [k for k in parameters if k not in declared]
    params = {k: v for k, v in parameters.items() if k in declared}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{src.stem}.running.ipynb"
    start = time.time()
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=False, log_output=log_output,
                            report_mode=False)
    except PapermillExecutionError as e:
        failed = out_dir / f"{src.stem}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        raise NotebookFailed(
            f"{src.name}: cell {e.exec_count} (index {e.cell_index}) raised {e.ename}: {e.evalue}\n"
            f"executed notebook kept at {failed}; earlier reports are unchanged"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.time() - start
    return _publish(src, tmp, out_dir, seconds, unknown)


def _publish(src: Path, executed: Path, out_dir: Path, seconds: float,
             unused: list[str]) -> ReportResult:
    import nbformat
    from nbconvert import HTMLExporter

    from glasskit.notebook import read_records

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write(out_dir / f"{src.stem}.html", lambda p: p.write_text(body, encoding="utf-8"))
    os.replace(executed, out_dir / src.name)
    (out_dir / f"{src.stem}.failed.ipynb").unlink(missing_ok=True)
    records = read_records(out_dir / src.name)
    if unused:
        records = {**records, "_unused_parameters": unused}
    return ReportResult(src.name, seconds, records)


def build_reports(parameters: dict[str, Any], out_dir: str | Path = "reports",
                  only: list[str] | None = None, folder: Path = NOTEBOOKS,
                  stream=sys.stderr) -> list[ReportResult]:
    out = Path(out_dir)
    books = find_notebooks(folder, only)
    # notebooks run with their own folder as cwd: keep runs where the caller expects them
    os.environ.setdefault("GLASSKIT_RUNS", str(Path("runs").resolve()))
    results: list[ReportResult] = []
    for i, nb in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {nb.name} ...", file=stream, flush=True)
        res = run_notebook(nb, out, parameters)
        print(f"[{i}/{len(books)}] {nb.name} done in {res.seconds:.1f}s", file=stream, flush=True)
        results.append(res)
        write_index(out, parameters)
    return results


def write_index(out_dir: Path, parameters: dict[str, Any]) -> Path:
    """``index.html`` listing every executed report in ``out_dir`` with its recorded figures."""
    from glasskit.notebook import read_records

    rows = []
    for nb in sorted(out_dir.glob("[0-9][0-9]_*.ipynb")):
        if nb.name.endswith(".failed.ipynb"):
            continue
        rec = read_records(nb)
        shown = ", ".join(f"{k}={v}" for k, v in rec.items() if isinstance(v, int | float | str))
        rows.append(f"<tr><td><a href='{nb.stem}.html'>{html.escape(nb.stem)}</a></td>"
                    f"<td><a href='{nb.name}'>ipynb</a></td>"
                    f"<td>{time.strftime('%Y-%m-%d %H:%M', time.localtime(nb.stat().st_mtime))}</td>"
                    f"<td><small>{html.escape(shown[:600])}</small></td></tr>")
    params = html.escape(", ".join(f"{k}={v}" for k, v in parameters.items()))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>glasskit reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:4px 10px;border-bottom:1px solid #ddd;
vertical-align:top}}</style></head><body><h1>glasskit reports</h1><p>Parameters: {params}</p>
<table><tr><th>report</th><th>notebook</th><th>executed</th><th>recorded figures</th></tr>
{''.join(rows)}</table></body></html>
"""
    return write_text(out_dir / "index.html", page)
