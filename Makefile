# Two commands: `make demo` (the whole pipeline on the embedded scene) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A torch already importable by $(PYTHON) (e.g. your CUDA build) is reused through
# --system-site-packages and never replaced.  Otherwise torch==$(TORCH_VERSION) is installed: a
# local CPU wheel where pip is configured with one (our CI); on other machines without a GPU pass
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" to avoid CUDA wheels.
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
DEMO_DIR ?= outputs/demo
DEMO_WORKERS ?= 2
MODEL_TYPE ?= hash

.PHONY: venv demo test clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "using the torch of $(PYTHON) ($$($(PYTHON) -c 'import torch; print(torch.__version__)'))"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

demo: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" DEMO_DIR=$(DEMO_DIR) DEMO_WORKERS=$(DEMO_WORKERS) MODEL_TYPE=$(MODEL_TYPE) bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_DIR) parscripts/demo_cells.txt parscripts/demo_cells-start.txt parscripts/demo_cells-finish.txt
