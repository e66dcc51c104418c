# Every target goes through `install`, which builds .venv/ at the repo root from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make run`'s addresses: the gateway on HOST:PORT, its metrics on HOST:METRICS_PORT, the demo upstream on
# 127.0.0.1:DEMO_PORT (`make run PORT=9090 DEMO_PORT=9091 METRICS_PORT=9092`).
HOST ?= 127.0.0.1
PORT ?= 8080
DEMO_PORT ?= 8081
METRICS_PORT ?= 9464
# `make run`'s usage store: a SQLite file in the temporary folder (USAGE_DB=path moves it).
USAGE_DB ?= $(or $(TMPDIR),/tmp)/llm-gateway/usage.db
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: help install run test lint fmt typecheck pytest helm-lint image lock clean bench bench-smoke bench-deps bench-instructions test-deps

install: $(STAMP) ## .venv/ with the package (editable) and its test extras (the default target)

help: ## this list
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "  make %-19s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The embedded default, offline: the demo upstream on $(DEMO_PORT) and the gateway on $(HOST):$(PORT), metrics on
# $(METRICS_PORT). Taken ports are said in one line before anything starts. The gateway is exec'd, so a signal to
# make (kill, Ctrl-C) reaches it and it drains; the banner comes once its /health answers; the background
# watcher's trap stops the demo when the gateway has ended.
run: install ## demo upstream + gateway, offline, with metrics and usage (HOST, PORT, DEMO_PORT, METRICS_PORT, USAGE_DB)
	@$(BIN)/python -m gateway.demo --check-free PORT=$(HOST):$(PORT) DEMO_PORT=127.0.0.1:$(DEMO_PORT) \
	  METRICS_PORT=$(HOST):$(METRICS_PORT) || exit 2; \
	$(BIN)/python -m gateway.demo --host 127.0.0.1 --port $(DEMO_PORT) & demo=$$!; \
	( trap 'kill $$demo 2>/dev/null' EXIT; \
	  $(BIN)/python -m gateway.demo --print-usage --wait 60 --pid $$$$ --gateway http://$(HOST):$(PORT) \
	    --metrics http://$(HOST):$(METRICS_PORT)/metrics; \
	  while kill -0 $$$$ 2>/dev/null; do sleep 0.2; done ) & \
	exec env DEMO_API_URL=http://127.0.0.1:$(DEMO_PORT)/v1 ENVIRONMENT=development \
	  TELEMETRY_ENABLE=true TELEMETRY_METRICS_PORT=$(METRICS_PORT) \
	  USAGE_STORE=$(USAGE_DB) USAGE_API_ENABLE=true \
	  $(BIN)/python -m gateway --host $(HOST) --port $(PORT) --providers config/demo.providers.yaml

test: lint typecheck helm-lint pytest bench-smoke ## lint, typecheck, helm-lint, pytest and bench-smoke (what CI runs)

# The layering of gateway/ (pyproject.toml, [tool.importlinter]) is part of lint: an import against it fails.
lint: install ## ruff and the import-linter layering contracts
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/lint-imports --no-cache

fmt: install ## fix formatting and what ruff can fix
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

typecheck: install ## mypy --strict
	$(BIN)/mypy --strict gateway bench

pytest: install test-deps ## the test suite, without the chart's (tests/deploy); test-deps first, so `make test` installs them as root
	$(BIN)/pytest -q --ignore=tests/deploy

# The Helm chart (lint, render with several value sets, strict Kubernetes schemas), the image and the sidecar
# example; offline: Helm's engine ships inside helm-python-sdk.
helm-lint: install ## the Helm chart rendered, linted and checked against Kubernetes schemas
	$(BIN)/pytest -q tests/deploy

# Not run by `make test`: no Docker engine is needed for the tests (tests/deploy/test_image.py reads the Dockerfile).
image: ## docker build -t llm-gateway:VERSION . (not run by test)
	docker build -t llm-gateway:$(VERSION) .

# Re-pin the image's runtime dependencies to what `make install` resolved.
lock: install ## re-pin the image's runtime dependencies to what install resolved
	$(BIN)/python deploy/lock.py

# The benchmark's tools: wrk and nginx (Debian packages), node for the mock upstream, valgrind for the instruction
# counts. As root, apt-get installs what is missing (and a failure stops the target: CI runs as root); any other
# user gets the list to install.
BENCH_TOOLS := wrk nginx node valgrind
BENCH_MISSING = missing=""; for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done
BENCH_INSTALL = $(BENCH_MISSING); \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | sed 's/node/nodejs/'); \
	  if [ "$$(id -u)" != 0 ]; then echo "$@: missing$$missing: run make bench-deps as root, or apt-get install $$pkgs" >&2; exit 1; fi; \
	  echo "$@: installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null || \
	  { echo "$@: apt-get could not install$$missing" >&2; exit 1; }; \
	fi
# For bench-smoke and bench-instructions: tools missing and not root, so nothing can install them: one line, success.
BENCH_SKIP = $(BENCH_MISSING); \
	if [ -n "$$missing" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "$@: skipped: missing$$missing (not root, so not installed; see make bench-deps)"; exit 0; \
	fi

# What the tests need beyond Python: a real PostgreSQL (the usage store's suite starts its own servers) and Debian's
# chromium with its driver (the usage page's test). As root, apt-get installs what is missing (a failure stops the
# target: CI runs as root); any other user gets the list and the tests skip what is not installed (outside CI).
TEST_MISSING = missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"
test-deps: ## what the tests need beyond Python (PostgreSQL, chromium, chromium-driver): apt-get as root
	@$(TEST_MISSING); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "$@: missing$$missing (not root, so not installed: the tests that need them skip; apt-get install$$missing as root)" >&2; exit 0; fi; \
	  echo "$@: installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	  { echo "$@: apt-get could not install$$missing" >&2; exit 1; }; \
	fi

bench-deps: ## the benchmark's tools (wrk, nginx, node, valgrind): apt-get as root
	@$(BENCH_INSTALL)

# Minutes: every scenario, three repetitions; the table goes to bench/results/latest.md. Not part of `test`.
bench: install bench-deps ## the benchmark against direct calls and nginx (15-25 minutes)
	$(BIN)/python -m bench.run --out bench/results/latest.md

# About five minutes: instructions per request of each hot path under callgrind, against bench/baseline.json; fails
# when one grows by more than the file's tolerance. UPDATE=1 writes the new figures (say why in the commit).
bench-instructions: install ## instructions per request under callgrind, against bench/baseline.json (UPDATE=1 rewrites)
	@$(BENCH_SKIP); $(BENCH_INSTALL); \
	echo "$(BIN)/python -m bench.instructions --check bench/baseline.json $(if $(UPDATE),--update)"; \
	$(BIN)/python -m bench.instructions --check bench/baseline.json $(if $(UPDATE),--update)

# Seconds: one short run of each scenario, correctness checked (no figures judged), so the harness never rots.
bench-smoke: install ## one short run of each benchmark scenario, correctness only (seconds)
	@$(BENCH_SKIP); $(BENCH_INSTALL); \
	echo "$(BIN)/python -m bench.run --smoke"; $(BIN)/python -m bench.run --smoke

clean: ## remove .venv/ and the tools' caches
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
