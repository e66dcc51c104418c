# Every target goes through `install`, which builds .venv/ at the repo root from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
DEMO_PORT ?= 8081
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install run test lint fmt typecheck pytest helm-lint image lock clean bench bench-smoke bench-deps bench-instructions

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

test: lint typecheck helm-lint pytest bench-smoke

# The layering of gateway/ (pyproject.toml, [tool.importlinter]) is part of lint: an import against it fails.
lint: install
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/lint-imports --no-cache

fmt: install
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

typecheck: install
	$(BIN)/mypy --strict gateway bench

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

# The benchmark's tools: wrk and nginx (Debian packages), node for the mock upstream, valgrind for the instruction
# counts; apt-get only what is missing.
BENCH_TOOLS := wrk nginx node valgrind
bench-deps:
	@missing=""; for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "bench-deps: installing$$missing"; \
	  pkgs=$$(echo $$missing | sed 's/node/nodejs/'); \
	  if [ "$$(id -u)" != 0 ]; then echo "bench-deps: run as root or install:$$pkgs" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	fi

# Minutes: every scenario, three repetitions; the table goes to bench/results/latest.md. Not part of `test`.
bench: install bench-deps
	$(BIN)/python -m bench.run --out bench/results/latest.md

# About two minutes: instructions per request of each hot path under callgrind, against bench/baseline.json; fails
# when one grows by more than the file's tolerance. UPDATE=1 writes the new figures (say why in the commit).
bench-instructions: install bench-deps
	$(BIN)/python -m bench.instructions --check bench/baseline.json $(if $(UPDATE),--update)

# Seconds: one short run of each scenario, correctness checked (no figures judged), so the harness never rots.
bench-smoke: install bench-deps
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
