"""pyproject.toml is the single source of dependencies; environment.yml must agree with it."""

import tomllib

import yaml
from conftest import ROOT


def _pyproject_deps():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["dependencies"] + meta["optional-dependencies"]["dev"]


def _split(req):
    req = req.split(";")[0].strip()
    name, _, version = req.partition("==")
    return name.strip().lower(), version.strip()


def test_every_dependency_is_pinned_and_torch_is_2_13_0():
    deps = dict(_split(d) for d in _pyproject_deps())
    assert all(deps.values()), [n for n, v in deps.items() if not v]
    assert deps["torch"] == "2.13.0"


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(_split(d) for d in pip if not d.startswith("-e"))
    assert pins == dict(_split(d) for d in _pyproject_deps())
    assert "-e ." in pip
