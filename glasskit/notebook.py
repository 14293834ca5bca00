"""Helpers for the numbered notebooks: recorded figures and plotly set-up.

``record(name, value)`` writes a JSON value into the cell's output under a glasskit MIME type
(as scrapbook's ``glue`` does); ``read_records(path)`` reads every recorded value back from an
executed notebook, which is how the tests check a notebook's results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glasskit.io import finite, json_default

MIME = "application/vnd.glasskit.record+json"


def record(name: str, value: Any) -> None:
    """Record a JSON-serialisable value in the notebook's output."""
    from IPython.display import display

    payload = json.loads(json.dumps(finite({"name": name, "value": value}), default=json_default,
                                    allow_nan=False))  # strict JSON: an undefined value is null
    display({MIME: payload, "text/plain": f"{name} = {payload['value']!r}"}, raw=True)


def read_records(path: str | Path) -> dict[str, Any]:
    """Every value recorded in an executed notebook, by name (the last one wins)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    out: dict[str, Any] = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if MIME in data:
                out[data[MIME]["name"]] = data[MIME]["value"]
    return out


def strip_outputs(path: str | Path) -> bool:
    """Clear a notebook's outputs, execution counts and per-run metadata in place (what a
    notebook looks like in the repository). Returns whether anything changed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    if changed:
        from glasskit.io import write_text

        write_text(path, nbformat.writes(nb) + "\n")
    return changed


def setup_plotly() -> None:
    """Figures render in JupyterLab (plotly's mimetype, drawn by its Lab extension) and in the
    HTML exports (a div and a call to ``Plotly.newPlot``; the export page loads plotly.js once
    from a shared file), so neither a saved notebook nor an export carries plotly.js itself."""
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    class GlasskitRenderer(MimetypeRenderer):
        """``application/vnd.plotly.v1+json`` for JupyterLab and ``text/html`` without the
        library for nbconvert exports."""

        def to_mimebundle(self, fig_dict: dict) -> dict:
            bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig_dict)
            bundle["text/html"] = _figure_html(fig_dict)
            return bundle

    pio.renderers["glasskit"] = GlasskitRenderer()
    pio.renderers.default = "glasskit"
    pio.templates.default = "plotly_white"


def _figure_html(fig_dict: dict) -> str:
    from plotly.io import to_html

    return to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                   default_width="100%", default_height=480, validate=False)


