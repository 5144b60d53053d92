# Two commands do their own set-up on a fresh machine: `make book` and `make test`.
# Everything runs inside .venv, made from requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab lives in a virtual environment of its own: its dependencies slow down myst-nb's glue in
# every kernel (see requirements-lab.txt), which the book's own runs (nbval, the build) must not pay.
LAB_VENV := .venv-lab
LAB_BIN := $(LAB_VENV)/bin
LAB_STAMP := $(LAB_VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb)) $(wildcard book/*.ipynb)
LINTED := chipbook tests scripts notebooks book
JB_FLAGS := --all -W -n --keep-going

.PHONY: help venv book test lint unit nbval nbval-simd html-build browser lab test-lab notebooks bench clean experiments

help:
	@echo "make book       build the HTML into _build/html"
	@echo "make test       run every check CI runs"
	@echo "make lab        open the notebooks in JupyterLab"
	@echo "make notebooks  re-execute and save every notebook from a fresh kernel"
	@echo "make bench      time the notebooks, the build, page sizes and slider moves"
	@echo "make experiments [NAME=…]  rerun the experiment tier (all, or one) into data/results/"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Open _build/html/index.html in a browser."

# What CI runs: lint, unit and data tests, strict nbval (twice: at this CPU's SIMD level and a lower
# one), the strict HTML build, browser tests. `.ci/run` adds `make test-lab`.
test: lint unit nbval nbval-simd html-build browser

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not lab" tests

# Each notebook runs in its own kernel, two notebooks at a time (--dist loadscope keeps a notebook's
# cells together on one worker, in order).
NBVAL := $(BIN)/python -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider \
	-n 2 --dist loadscope

nbval: $(STAMP)
	$(NBVAL) notebooks book

# The guard that keeps the outputs independent of the CPU: the chapters once more, with numpy (and
# OpenBLAS) switched to a lower SIMD level than this machine's best (scripts/lower_simd.py).
nbval-simd: $(STAMP)
	env $$($(BIN)/python scripts/lower_simd.py) $(NBVAL) notebooks

html-build: book

browser: $(STAMP)
	$(BIN)/python -m pytest -m browser tests

$(LAB_STAMP): requirements.txt requirements-lab.txt pyproject.toml
	$(PYTHON) -m venv $(LAB_VENV)
	$(LAB_BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(LAB_BIN)/python -m pip install --quiet -r requirements-lab.txt
	touch $@

lab: $(LAB_STAMP)
	$(LAB_BIN)/jupyter lab --config=book/_lab/jupyter_server_config.py notebooks

# JupyterLab in headless Chromium: every chapter opens, runs, renders its prose and moves a slider.
test-lab: $(LAB_STAMP)
	$(LAB_BIN)/python -m pytest -m lab tests

notebooks: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py $(NOTEBOOKS)

# The experiment tier: `make experiments` reruns every experiment, `make experiments NAME=x` one, and
# writes data/results/<name>.csv and <name>.json (commit both, then `make notebooks`).
experiments: $(STAMP)
	$(BIN)/python -m chipbook.experiments $(NAME)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf _build
