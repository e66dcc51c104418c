# Every target goes through `install`, which builds .venv/ at the repo root from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
DEMO_PORT ?= 8081
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install run test lint fmt typecheck pytest helm-lint image lock clean

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

test: lint typecheck helm-lint pytest

lint: install
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

fmt: install
	$(BIN)/ruff format gateway tests
	$(BIN)/ruff check --fix gateway tests

typecheck: install
	$(BIN)/mypy --strict gateway

pytest: install
	$(BIN)/pytest -q --ignore=tests/deploy

# The Helm chart (lint, render with several value sets, strict Kubernetes schemas), the image and the sidecar
# example; offline: Helm's engine ships inside helm-python-sdk.
helm-lint: install
	$(BIN)/pytest -q tests/deploy

# Not run by `make test`: no Docker engine is needed for the tests (tests/deploy/test_image.py reads the Dockerfile).
image:
	docker build -t llm-gateway:$(VERSION) .

# Re-pin the image's runtime dependencies to what `make install` resolved.
lock: install
	$(BIN)/python deploy/lock.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
