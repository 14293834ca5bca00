"""The package's shape: imports point down the pipeline only (no cycle, no arrow from a lower
layer to a higher one, function-level imports included), and every registered model states
the interface of its kind."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import ROOT

from glasskit.models import REGISTRY
from glasskit.models.interface import IdModel, Model, SidModel
from glasskit.models.sid_decoder import SidDecoder

# Lowest first. A unit may import units of lower layers only. models/ holds torch modules and
# their own config dataclasses and imports nothing of glasskit but errors, so config (which
# composes a model's section from the registry) sits above it.
LAYERS = [
    {"errors"},
    {"io", "device", "models"},
    {"config"},
    {"profiles"},
    {"data", "tokenize", "runs", "notebook"},
    {"batching", "decode"},
    {"pipeline", "ranking", "metrics"},
    {"evaluation"},
    {"train"},
    {"analysis"},
    {"reports", "widgets"},
    {"cli"},
    {"__main__"},
]


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "glasskit" and len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (top-level modules and subpackages of glasskit)."""
    graph: dict[str, set[str]] = defaultdict(set)
    package = ROOT / "glasskit"
    for path in package.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        src = _unit(module)
        if src is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                dst = _unit(name)
                if name == "glasskit":
                    dst = "errors"  # the package root re-exports config and errors
                if dst and dst != src:
                    graph[src].add(dst)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    units = set(graph) | {d for ds in graph.values() for d in ds}
    assert units <= set(layer), f"units missing from LAYERS: {sorted(units - set(layer))}"
    return sorted((s, d) for s, ds in graph.items() for d in ds if layer[d] >= layer[s])


def test_every_import_points_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_the_check_reads_function_level_imports_and_catches_an_arrow_back_up():
    graph = import_graph()
    assert "models" in graph["config"]  # config reads the registry inside functions only
    assert "config" not in graph["models"] and "data" not in graph["models"]
    assert upward_imports({"config": {"models", "train"}, "data": {"tokenize"}}) == [
        ("config", "train"), ("data", "tokenize")]  # a higher layer, or a peer


def test_every_registered_model_states_its_interface():
    for name, entry in REGISTRY.items():
        assert issubclass(entry.model, Model), name
        kind = SidModel if entry.kind == "sid" else IdModel
        assert issubclass(entry.model, kind), f"{name} is registered as {entry.kind}"
    shared = [n for n, e in REGISTRY.items() if issubclass(e.model, SidDecoder)]
    assert shared == ["tiger", "glass", "dualgr", "gems"]  # every SID decoder is one code path
    assert not Path(ROOT / "glasskit" / "models" / "tiger.py").read_text().count("def run_decoder")
