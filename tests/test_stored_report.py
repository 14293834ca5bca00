"""The stored smoke report (tests/stored_report, made by `make report-refresh`) against a fresh
execution of the notebooks on this machine.

What is compared, and why: float results differ between processors in their last bits (MKL and
oneDNN pick other kernels on an AMD EPYC than on an Intel Xeon with AVX-512 or AMX), and the
smoke profile's training and RQ-VAE amplify those bits into other metrics, so no trained number
stored from one machine may be asserted on another. The fresh report must have the stored one's
shape: the same cells with the same sources, and per cell the same outputs of the same kind
(stream, display, error), MIME types, recorded names, table headers, figure traces and titles,
and text with every number masked. Its recorded figures are then checked for what they must
satisfy whatever the processor: data statistics exactly (they involve no float training),
metrics between 0 and 1, ranks at least 1, prefixes that only shrink down the levels."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import ROOT

import glasskit as gk
from glasskit.data import prepare
from glasskit.notebook import MIME, read_records
from glasskit.reports import build_reports, find_notebooks

STORED = ROOT / "tests" / "stored_report"
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\b(?:nan|NaN|inf|None|null)\b")
VOLATILE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UUID"),  # plotly
    (re.compile(r"/[^\s'\"]*/(runs|glasskit)/"), r"\1/"),  # absolute paths differ per checkout
    # how a training ends depends on its validation numbers, not on the notebook
    (re.compile(r"^(stopped early after epoch|finished all) .*$", re.M), "END OF TRAINING"),
]


def mask(text: str) -> str:
    """``text`` with volatile fields and every number replaced."""
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return NUMBER.sub("#", text)


class _TableHeads(HTMLParser):
    """Column headers of every table in an HTML fragment (a DataFrame's <thead>)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[str]] = []
        self._head = self._cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "thead":
            self._head = True
        elif tag == "th" and self._head and self.tables:
            self._cell = True
            self.tables[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self._head = self._head and tag != "thead"
        self._cell = self._cell and tag != "th"

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.tables[-1][-1] += data.strip()


def output_shape(out: dict) -> tuple:
    kind = out["output_type"]
    if kind == "stream":
        return kind, out["name"], mask(out["text"])
    if kind == "error":
        return kind, out["ename"]
    data = out["data"]
    shape: tuple = (kind, tuple(sorted(data)))
    if MIME in data:
        return (*shape, data[MIME]["name"])
    if "application/vnd.plotly.v1+json" in data:
        fig = data["application/vnd.plotly.v1+json"]
        traces = tuple((t.get("type"), mask(str(t.get("name", "")))) for t in fig["data"])
        return (*shape, traces, mask(str(fig["layout"].get("title", {}).get("text", ""))))
    if "text/html" in data:
        heads = _TableHeads()
        heads.feed(data["text/html"])
        tables = tuple(tuple(mask(h) for h in t) for t in heads.tables)
        return (*shape, tables or mask(data["text/html"]))
    return (*shape, mask(data.get("text/plain", "")))


def notebook_shape(path: Path) -> list[tuple]:
    """Per cell: type, source and the shapes of its outputs (consecutive stream outputs of one
    name joined, as Jupyter shows them)."""
    cells = []
    for cell in nbformat.read(str(path), as_version=4).cells:
        outs: list[dict] = []
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream" and outs and outs[-1].get("name") == o["name"]:
                outs[-1] = {**outs[-1], "text": outs[-1]["text"] + o["text"]}
            else:
                outs.append(dict(o))
        cells.append((cell.cell_type, cell.source, [output_shape(o) for o in outs]))
    return cells


def numbers(value: Any) -> list[float | None]:
    """Every number (or null) inside a recorded value, depth first."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    if value is None or isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


def unit(value: Any) -> bool:
    """Every number in ``value`` is defined and in [0, 1], or undefined (None)."""
    return all(x is None or 0 <= x <= 1 for x in numbers(value))


def check_records(stored: dict[str, dict], fresh: dict[str, dict]) -> None:
    """What the smoke report's recorded figures must satisfy on any processor."""
    for nb in stored:
        assert set(fresh[nb]) == set(stored[nb]), nb
        for name, v in fresh[nb].items():
            assert all(x is None or math.isfinite(x) for x in numbers(v)), (nb, name)

    d = fresh["01"]  # data preparation: integer work on seeded data, exact everywhere
    expected = prepare(gk.profile("smoke")).stats()
    assert d == stored["01"]
    assert d["leakage_checked_samples"] == sum(expected["samples"].values())
    for key in ("users", "items", "interactions", "length_max", "samples"):
        assert d[key] == expected[key], key

    t = fresh["02"]
    for key in ("method", "codebooks", "items", "unique_full_sids"):
        assert t[key] == stored["02"][key], key  # a collision level makes every full SID unique
    assert unit(t["utilization"]) and unit(t["collision_rate"]) and t["recon_error"] >= 0
    assert all(1 <= p <= k for p, k in zip(t["perplexity"], t["codebooks"]))
    assert 1 <= t["retrieved_len_mean"] <= t["items"]
    assert set(t["resize_mean_lengths"]) == set(stored["02"]["resize_mean_lengths"])

    m = fresh["03"]
    for key in ("model", "primary", "epochs_run", "run"):  # run names: config and data hashes
        assert m[key] == stored["03"][key], key
    for k in (10, 20):
        assert 0 <= m[f"test_ndcg@{k}"] <= m[f"test_hit@{k}"] <= 1
    assert m["test_hit@10"] <= m["test_hit@20"]
    assert len(m["acc"]) == len(m["precision"]) == len(m["crp"]) == 4
    assert unit(m["acc"]) and unit(m["precision"]) and all(c is None or c >= 1 for c in m["crp"])

    g = fresh["04"]
    assert g["runs"] == stored["04"]["runs"]
    for name in g["runs"]:
        assert unit(g[f"gate_by_length {name}"]["mean_gate"])
        assert unit(g[f"retrieved_share {name}"])
        assert g[f"gate_trend {name}"] is None or -1 <= g[f"gate_trend {name}"] <= 1
    assert unit(g["short_mass_last3"]) and unit(g["gems_stream_shares"])
    for row in g["gems_stream_ablation"].values():
        assert unit(row)
        hr = [row[f"Hrecall@{i}"] for i in range(1, 5)]
        assert hr == sorted(hr, reverse=True)  # a prefix survives only if its parent did

    c = fresh["05"]
    assert c["runs"] == stored["05"]["runs"]
    for name, v in c.items():
        if name.startswith(("hrecall", "P_i")):
            assert unit(v), name
        if name.startswith("crp "):
            assert all(x is None or x >= 1 for x in v), name

    w = fresh["06"]
    for key in ("dataset", "missing_pairs", "runs"):
        assert w[key] == stored["06"][key], key
    assert set(w["comparison"]) == set(stored["06"]["comparison"])
    assert all(unit(row["ndcg@10"]) and row["seeds"] == 1 for row in w["comparison"].values())


@pytest.mark.slow
def test_stored_smoke_report_has_the_shape_of_a_fresh_one(tmp_path, monkeypatch):
    books = sorted(STORED.glob("[0-9][0-9]_*.ipynb"))
    assert [b.name for b in books] == [p.name for p in find_notebooks()]  # the main command's
    monkeypatch.setenv("GLASSKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as `make report-refresh` builds it
    out = tmp_path / "out"
    build_reports({"profile": "smoke"}, out)
    for stored in books:
        fresh, want = notebook_shape(out / stored.name), notebook_shape(stored)
        assert len(fresh) == len(want), stored.name
        for i, (a, b) in enumerate(zip(fresh, want)):
            assert a == b, f"{stored.name} cell {i}: the fresh report differs in shape"
    check_records({b.name[:2]: read_records(b) for b in books},
                  {b.name[:2]: read_records(out / b.name) for b in books})


def test_shape_ignores_numbers_but_not_structure():
    """The comparison is blind to a number and sees a renamed column or a missing output."""
    def table(head: str, value: str) -> dict:
        html = f"<table><thead><tr><th>{head}</th></tr></thead><tr><td>{value}</td></tr></table>"
        return {"output_type": "display_data", "metadata": {},
                "data": {"text/html": html, "text/plain": value}}

    def stream(text: str) -> dict:
        return {"output_type": "stream", "name": "stdout", "text": text}

    assert output_shape(table("ndcg@10", "0.0049")) == output_shape(table("ndcg@10", "0.0177"))
    assert output_shape(table("ndcg@10", "0.1")) != output_shape(table("hit@10", "0.1"))
    assert output_shape(stream("epoch 1: loss 1.5\nstopped early after epoch 3: x 0.1\n")) == \
        output_shape(stream("epoch 1: loss 2.25\nfinished all 3 epochs; best 0.2\n"))
    assert output_shape(stream("epoch 1: loss nan\n")) == output_shape(stream("epoch 1: loss 0.5\n"))
    assert output_shape(stream("a 1\n")) != output_shape(stream("a 1\nb 2\n"))
    assert not unit([0.5, 1.2]) and unit({"a": [0.0, None, 1.0]})
