# Two commands on a fresh machine (Python 3.11): `make reports` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
DATASET ?=          # empty: the profile's own dataset (quick: ml-100k, smoke: synthetic)
ARGS    ?=          # more `glasskit reports` options, e.g. --param 04:gems_streams=[]

.PHONY: reports test lint bench strip report-refresh clean-venv compare reproduce gpu-prep gpu-check

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

reports: $(VENV)/.installed
	$(PY) -m glasskit reports --profile $(PROFILE) $(if $(strip $(DATASET)),--dataset $(DATASET)) --out reports $(ARGS)

# The suite runs twice: with this processor's own kernels, then with torch's, MKL's and oneDNN's
# narrowed: to AVX2 on a processor with AVX-512 (an Intel Xeon, an AMD EPYC Zen 4), else to no
# vector extension at all (on an AVX2-only processor, AVX2 would be its own kernels again). Float
# results differ between the two in their last bits, so an assertion that holds on one machine
# only fails here, not on someone else's machine.
KERNELS_AVX2 := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
KERNELS_SCALAR := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41
KERNELS_OTHER := $(if $(shell grep -lw avx512f /proc/cpuinfo 2>/dev/null),$(KERNELS_AVX2),$(KERNELS_SCALAR))
test: $(VENV)/.installed
	$(PY) -m ruff check glasskit tests bench notebooks
	$(PY) -m pytest -n 2 -q
	$(KERNELS_OTHER) $(PY) -m pytest -n 2 -q -p no:cacheprovider --deselect tests/test_browser.py

strip: $(VENV)/.installed   # clear notebook outputs saved from JupyterLab before committing
	$(PY) -m glasskit strip-notebooks

# the stored smoke report whose shape tests/test_stored_report.py checks against a fresh one
REPORT_BUILD := .cache/report-build
report-refresh: $(VENV)/.installed
	rm -rf $(REPORT_BUILD) && mkdir -p $(REPORT_BUILD)
	OMP_NUM_THREADS=1 GLASSKIT_RUNS=$(CURDIR)/$(REPORT_BUILD)/runs GLASSKIT_CACHE=$(CURDIR)/$(REPORT_BUILD)/cache \
	  $(PY) -m glasskit reports --profile smoke --out $(REPORT_BUILD)/out
	cp $(REPORT_BUILD)/out/[0-9][0-9]_*.ipynb tests/stored_report/

# The comparison under the shared convergence budget (hours on 2 CPU cores; rerun to resume):
# every row on every training position to convergence. Ordered so that the smallest complete
# table lands first: seed 0 on both datasets, then ml-100k's seeds 1-2, then ml-latest-small's
# (each sweep reuses the runs the earlier ones finished; the last writes the whole table).
# Runs and tables go to results/, which is committed: a finished run's record (config, metrics,
# per-user ranks) is reused without its checkpoints, so the tables are rebuilt, not retrained,
# from a clone. Train afresh into another store with RESULTS=/some/folder.
MLS ?= ml-latest-small=../shared/data/ml-latest-small
RESULTS ?= results
SWEEP := GLASSKIT_RUNS=$(RESULTS)/runs $(PY) -m glasskit sweep
compare: $(VENV)/.installed
	$(SWEEP) --profile converge --seeds 0 --datasets ml-100k,$(MLS) --out $(RESULTS)/comparison-seed0.md
	$(SWEEP) --profile converge --seeds 0,1,2 --datasets ml-100k --out $(RESULTS)/comparison-ml-100k.md
	$(SWEEP) --profile converge --seeds 0,1,2 --datasets ml-100k,$(MLS) --out $(RESULTS)/comparison.md

# TIGER Table 1's protocol at CPU size on the S3-Rec Amazon sets (hours on 2 CPU cores; rerun to
# resume), ordered so that the smallest complete table lands first: GLASS beside TIGER and SASRec
# on Toys (seed 0), TIGER and SASRec on Toys (3 seeds), on Sports (seed 0); then notebook 07
AMAZON ?= ../shared/data/amazon-s3rec
TOYS := --profile s3rec --data-dir $(AMAZON) --set data.name=Toys_and_Games --against sasrec
reproduce: $(VENV)/.installed
	$(SWEEP) $(TOYS) --rows tiger,sasrec,glass:sidtier+shs,glass:sidtier+shs+cr --seeds 0 \
	  --out $(RESULTS)/reproduction-toys-glass.md
	$(SWEEP) $(TOYS) --rows tiger,sasrec --seeds 0,1,2 --out $(RESULTS)/reproduction-toys.md
	$(SWEEP) --profile s3rec --data-dir $(AMAZON) --set data.name=Sports_and_Outdoors \
	  --rows tiger,sasrec --seeds 0 --against sasrec --out $(RESULTS)/reproduction-sports.md
	GLASSKIT_RUNS=$(RESULTS)/runs $(PY) -m glasskit reports --profile s3rec --only 07 --out reports \
	  --param '07:names=[Toys_and_Games, Sports_and_Outdoors]' --param '07:seeds=[0, 1, 2]' \
	  --param '07:set_seeds={Sports_and_Outdoors: [0]}'

# The GPU check (bench/gpu_check.py). On a GPU machine with network and this .venv: make gpu-check.
# For one without network (its own torch): make gpu-prep here, carry .gpu-prep/ with the tree and
# run `bash bench/gpu_check.sh` there.
gpu-prep: $(VENV)/.installed
	$(PY) bench/gpu_prep.py
gpu-check: $(VENV)/.installed
	$(PY) bench/gpu_check.py

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

clean-venv:
	rm -rf $(VENV)
