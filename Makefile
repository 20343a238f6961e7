# The two commands a newcomer needs: `make demo` and `make test`.
# Everything else here is what those two stand on.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
export PDAUTH_TEST_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test

.PHONY: demo test check lint typecheck pytest pytest-fast coverage bench schema services clean

# The test toolchain (dev extras: linters, type checker, fuzzers, browsers' driver, frameworks).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	@touch $(STAMP) $(DEMO_STAMP)

# The demo needs the bare package only (SQLite, the emulator): no extras, no dev tools.
$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	@touch $(DEMO_STAMP)

## demo: run the service and the PagerDuty emulator together on loopback (SQLite)
demo: $(DEMO_STAMP)
	$(BIN)/pdauth demo

## test: lint, type-check and the whole test suite with coverage (installs what it needs)
test: $(STAMP) services lint typecheck pytest coverage

## check: the fast lane: lint, types and the tests not marked slow/postgres/browser/evidence/multi
check: $(STAMP) lint typecheck pytest-fast

pytest-fast: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -q \
	  -m "not slow and not postgres and not browser and not evidence and not multi"

## schema: fetch PagerDuty's published REST schema (pinned, checksummed) for the conformance tests
schema:
	@$(PYTHON) scripts/fetch_schema.py

services:
	@bash scripts/ensure-services.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider

# Coverage is measured on the pure core's own tests: tracing the whole suite (multi-process
# storms, browsers, fuzzers) would triple its time on Python 3.11 for no extra information.
coverage: $(STAMP)
	@echo "Branch coverage of the pure OAuth core and the key ring (must be >= 95%):"
	$(BIN)/pytest -q -p no:cacheprovider tests/oauth tests/test_crypto.py \
	  --cov=pdauth.oauth --cov=pdauth.crypto --cov-branch --cov-report=term-missing:skip-covered \
	  --cov-fail-under=95

## bench: every benchmark in benchmarks/, tables printed, JSON in benchmarks/results/
##        (a smoke run: `make bench BENCH_ARGS=--quick`; one alone: python benchmarks/bench_x.py)
BENCH_ARGS ?=
bench: $(STAMP) services
	@mkdir -p benchmarks/results
	@status=0; for b in benchmarks/bench_*.py; do echo "== $$b"; \
	  $(BIN)/python $$b --json benchmarks/results/ $(BENCH_ARGS) || { echo "!! $$b failed"; status=1; }; \
	done; exit $$status

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output .cache
