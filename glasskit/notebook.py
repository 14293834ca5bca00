"""Helpers for the numbered notebooks: recorded figures and plotly set-up.

``record(name, value)`` writes a JSON value into the cell's output under a glasskit MIME type
(as scrapbook's ``glue`` does); ``read_records(path)`` reads every recorded value back from an
executed notebook, which is how the tests check a notebook's results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glasskit.io import json_default

MIME = "application/vnd.glasskit.record+json"


def record(name: str, value: Any) -> None:
    """Record a JSON-serialisable value in the notebook's output."""
    from IPython.display import display

    payload = json.loads(json.dumps({"name": name, "value": value}, default=json_default))
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


def setup_plotly() -> None:
    """Figures render in JupyterLab and in the HTML reports (plotly.js embedded, no CDN)."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
    pio.templates.default = "plotly_white"

