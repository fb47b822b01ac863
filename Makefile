# Quick start: `make demo` runs interlace on the embedded model, `make test` runs the test suite.
# Both create .venv on first use and skip setup when it is already done.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU machine without torch gets this build first, so pip never pulls a multi-GB CUDA wheel.
# On a GPU machine, install your CUDA torch into the venv first (or set TORCH_SPEC) and it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.interlace-installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interlace demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache
