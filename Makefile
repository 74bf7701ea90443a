# ctloop: `make run` (set up + train on the bundled data) and `make test` (set up + lint + tests;
# the end-to-end tests with real servers: `make test-e2e`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Offline and quiet: every process started from here has telemetry off.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export UV_PYTHON_DOWNLOADS := never
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
BIN := .venv/bin
PYTEST_ARGS ?=
# make test runs in this many pytest-xdist workers, a whole test file per worker (module fixtures
# and the order inside a file hold); 0 runs in this process, one test after another.
TEST_WORKERS ?= 2

.PHONY: help install install-s3 setup run test test-e2e test-ui screenshots test-slow lint format repro bench clean prefect-yaml

help:
	@echo "make run        set up from uv.lock and run the training flow on the bundled data"
	@echo "make test       set up from uv.lock, lint, then the tests but slow, e2e and ui ones"
	@echo "                (tests/unit, tests/data, tests/model, tests/integration)"
	@echo "make test-e2e   set up with the s3 extra, then the end-to-end tests (tests/e2e: ctloop up,"
	@echo "                real servers, a local S3 server, PostgreSQL)"
	@echo "make install-s3 the default install plus the optional extra ctloop[s3] (dvc-s3, boto3)"
	@echo "make test-ui    set up, then the browser tests (tests/ui: the UIs in Debian's chromium)"
	@echo "make screenshots  the browser tests, writing README's screenshots (docs/*.png) again"
	@echo "make test-slow  the slow, large-data tests"
	@echo "make repro      the same pipeline through DVC (dvc repro)"
	@echo "make bench      every issue-4 benchmark in sequence (about 1.5 h; see benchmarks/RESULTS.md)"
	@echo "make lint       ruff check + format check + import contracts (lint-imports)"
	@echo "make prefect-yaml  regenerate prefect.yaml from deployments/definitions.py and params.yaml"

.tools/bin/uv:
	python3.11 -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: byte code written once at install; without it every process compiles the
# libraries it imports (tens of seconds per flow run where PYTHONDONTWRITEBYTECODE is set).
.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python 3.11 --compile-bytecode
	@rm -f .venv/.synced-s3  # this sync removed the extra, if it was there
	@touch $@

install: .venv/.synced

# The optional extra `ctloop[s3]` (dvc-s3, boto3: object storage for DVC data and MLflow
# artifacts) on top of the default install; `make test-e2e` needs it (its object-storage tests
# fail, not skip, without it). `make install` alone syncs the default set again.
.venv/.synced-s3: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python 3.11 --compile-bytecode --extra s3
	@touch $@

install-s3: .venv/.synced-s3

setup: install
	$(BIN)/ctloop setup

run: setup
	$(BIN)/ctloop run

# Markers by folder (tests/conftest.py): tests/integration -> integration, tests/e2e -> e2e,
# tests/ui -> ui.
test: setup lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not e2e and not ui" $(PYTEST_ARGS)

test-e2e: setup install-s3
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

# Browser tests: Playwright drives Debian's chromium (CTLOOP_CHROMIUM overrides the path);
# screenshots in $$CTLOOP_UI_SCREENSHOTS (default build/ui-screenshots/).
test-ui: setup
	$(BIN)/pytest -m ui tests/ui $(PYTEST_ARGS)

screenshots: setup
	CTLOOP_DOCS_SCREENSHOTS=1 $(BIN)/pytest -m ui tests/ui $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# prefect.yaml is generated: one definition of the deployments (deployments/definitions.py).
prefect-yaml: install
	$(BIN)/python -m deployments.definitions --write prefect.yaml

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# One after another (each needs the cores to itself); tables in benchmarks/out/<name>.md, the
# headline `name: value` of each printed at the end. BENCHMARKS="startup reruns" runs a subset.
BENCHMARKS ?= startup overhead reruns tuning_efficiency parallel_tuning scale busy_machine many_batches
bench: install
	@mkdir -p benchmarks/out
	@set -o pipefail; for b in $(BENCHMARKS); do \
		echo "== $(BIN)/python benchmarks/$$b.py"; \
		$(BIN)/python benchmarks/$$b.py | tee benchmarks/out/$$b.md || exit 1; \
	done
	@echo "== headlines"; for b in $(BENCHMARKS); do tail -n 1 benchmarks/out/$$b.md; done

clean:
	rm -rf reports models mlartifacts mlflow.db data/batches data/quarantine
