# One entry point for every check. `make up` runs the pipeline, `make test` runs lint, types and tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck unit bench clean install screenshots

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit("meterstream needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/meterstream up

lint: $(STAMP)
	$(BIN)/ruff check processor topics tests bench
	$(BIN)/ruff format --check processor topics tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Every test that needs no broker, Redis or whole program, wherever it lives (tests/conftest.py marks the
# others `integration`): 640 tests (2 more skipped without promtool) in 25 s on the 2-core development
# machine, measured with `time make unit` beside other test runs (load average 3, 2026-12-06).
unit: $(STAMP)
	$(BIN)/pytest -q -n 0 -m "not integration"

# Three workers, each with its own embedded broker and Valkey (tests/conftest.py). On the 2-core development
# machine the 630 tests of 2026-11-25 took 17 min 52 s in one process and 8 min 20 s on three; the 721 of
# the end of that day take 7 min 35 s. PYTEST_ARGS='-n 0' runs them in one process.
PYTEST_ARGS ?= -n 3

# The second run: the end-to-end suite and the Redis Cluster tests against an embedded 3-primary Valkey
# cluster (tests/conftest.py, METERSTREAM_TEST_REDIS_CLUSTER=1); tests/cluster is skipped by the first run.
test: lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)
	METERSTREAM_TEST_REDIS_CLUSTER=1 $(BIN)/pytest -q tests/e2e tests/cluster $(PYTEST_ARGS)

# The screenshots of docs/operating.md, retaken by the browser test that checks the pages render them
# (tests/gateway/test_screenshots.py; needs Debian's chromium).
screenshots: $(STAMP)
	METERSTREAM_TEST_SCREENSHOTS=$(CURDIR)/docs/images $(BIN)/pytest -q -n 0 tests/gateway/test_screenshots.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
