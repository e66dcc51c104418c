# Every target goes through `install`, which builds .venv/ at the repo root from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
DEMO_PORT ?= 8081

.PHONY: install run test lint fmt typecheck pytest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The embedded default: a demo upstream on $(DEMO_PORT) and the gateway on $(PORT), both offline.
run: install
	@$(BIN)/python -m gateway.demo --host 127.0.0.1 --port $(DEMO_PORT) & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	DEMO_API_URL=http://127.0.0.1:$(DEMO_PORT)/v1 $(BIN)/python -m gateway.demo --print-usage --gateway http://$(HOST):$(PORT); \
	DEMO_API_URL=http://127.0.0.1:$(DEMO_PORT)/v1 ENVIRONMENT=development \
	  $(BIN)/python -m gateway --host $(HOST) --port $(PORT) --providers config/demo.providers.yaml

test: lint typecheck pytest

lint: install
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

fmt: install
	$(BIN)/ruff format gateway tests
	$(BIN)/ruff check --fix gateway tests

typecheck: install
	$(BIN)/mypy --strict gateway

pytest: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
