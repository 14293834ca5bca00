# Two commands on a fresh machine (Python 3.11): `make reports` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
DATASET ?=          # empty: the profile's own dataset (quick: ml-100k, smoke: synthetic)
ARGS    ?=          # more `glasskit reports` options, e.g. --param 04:gems_streams=[]

.PHONY: reports test lint bench strip nbval-refresh clean-venv

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

reports: $(VENV)/.installed
	$(PY) -m glasskit reports --profile $(PROFILE) $(if $(strip $(DATASET)),--dataset $(DATASET)) --out reports $(ARGS)

test: $(VENV)/.installed
	$(PY) -m ruff check glasskit tests bench notebooks
	$(PY) -m pytest -n 2 -q

strip: $(VENV)/.installed   # clear notebook outputs saved from JupyterLab before committing
	$(PY) -m glasskit strip-notebooks

# the stored smoke report that tests/test_nbval.py re-executes under pytest --nbval
NBVAL_BUILD := .cache/nbval-build
nbval-refresh: $(VENV)/.installed
	rm -rf $(NBVAL_BUILD) && mkdir -p $(NBVAL_BUILD)
	OMP_NUM_THREADS=1 GLASSKIT_RUNS=$(CURDIR)/$(NBVAL_BUILD)/runs GLASSKIT_CACHE=$(CURDIR)/$(NBVAL_BUILD)/cache \
	  $(PY) -m glasskit reports --profile smoke --out $(NBVAL_BUILD)/out
	cp $(NBVAL_BUILD)/out/[0-9][0-9]_*.ipynb tests/nbval/

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

clean-venv:
	rm -rf $(VENV)
