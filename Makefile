# Two commands on a fresh machine (Python 3.11): `make reports` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
DATASET ?=          # empty: the profile's own dataset (quick: ml-100k, smoke: synthetic)

.PHONY: reports test lint bench clean-venv

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

reports: $(VENV)/.installed
	$(PY) -m glasskit reports --profile $(PROFILE) $(if $(strip $(DATASET)),--dataset $(DATASET)) --out reports

test: $(VENV)/.installed
	$(PY) -m ruff check glasskit tests bench
	$(PY) -m pytest -n 2 -q

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

clean-venv:
	rm -rf $(VENV)
