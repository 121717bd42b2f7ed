# Two commands on a fresh machine: `make demo` and `make test`. Everything they
# need is installed here, idempotently: uv into .tools/, the locked workspace
# into .venv/ (uv sync --frozen), the compose plugin into .docker-config/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
SYNC := $(UV) sync --frozen --inexact --python $(PYTHON)
WE := .venv/bin/wasm-engine

.PHONY: venv test lint unit demo bench agents clean down models

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.9

.venv/.synced: $(UV) uv.lock pyproject.toml shared/pyproject.toml orchestrator/pyproject.toml wasm-worker/pyproject.toml inference-worker/pyproject.toml ui-monitor/pyproject.toml
	$(SYNC)
	touch $@

venv: .venv/.synced

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: venv lint
	.ci/install-compose
	.ci/install-clang || [ -z "$$CI" ]  # without root the C rebuild test skips; CI must have it
	.ci/install-chromium || [ -z "$$CI" ]  # without it the browser test skips; CI must have it
	.venv/bin/pytest

unit: venv
	.venv/bin/pytest tests/unit

# The LLM, converted once into models/ (cached; the build tools live in models/.build-venv),
# and the small demo/bench tensor model.
models: venv
	$(WE) models build smollm2
	$(WE) models build mlp

demo: venv
	.venv/bin/python agents/demo.py $(if $(KEEP),--keep,)

agents:
	$(MAKE) -C agents

down: venv
	$(WE) down

bench: venv
	$(SYNC) --group bench
	$(WE) bench all --json

clean:
	-$(WE) down
	rm -rf .venv .tools .wasm-engine .docker-config
