# seg-assets: two commands for a newcomer, `make demo` and `make test`.
# Every target creates or reuses .venv; nothing is installed outside it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export SEG_DATA_DIR ?= $(CURDIR)/data
DEMO_USERS ?= 20000
DEMO_DAYS ?= 180
DEMO_SEED ?= 7
SIZE ?= small
UI_PORT ?= 3000
# Test workers (pytest-xdist): whole modules per worker, modules with a slow test first (seg_assets_tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: help venv demo test test-fast dictionary lint ui bench eval-cdnow clean

help:
	@echo "make demo    generate demo data into \$$SEG_DATA_DIR ($(SEG_DATA_DIR)), materialize everything, print the segments"
	@echo "make test    lint (ruff), then the test suite (unit, materialize(), end-to-end with a real dagster dev)"
	@echo "make lint    ruff on the whole tree"
	@echo "make test-fast   the suite without the end-to-end dagster dev test"
	@echo "make dictionary  rewrite README's feature dictionary from features/dictionary.py"
	@echo "make ui      start the Dagster UI (dagster dev) with DAGSTER_HOME under \$$SEG_DATA_DIR"
	@echo "make bench   benchmark (SIZE=small|medium|large), not part of CI"
	@echo "make eval-cdnow  churn model vs recency, frequency and BG/NBD on the CDNOW sample (downloads it from PyPI)"
	@echo "make clean   remove \$$SEG_DATA_DIR and the virtualenv"

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	@if [ -z "$$(ls -A "$(SEG_DATA_DIR)/landing/orders" 2>/dev/null)" ]; then \
	  $(BIN)/seg-assets generate "$(SEG_DATA_DIR)" --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed $(DEMO_SEED) --campaigns --devices; \
	else echo "landing data already in $(SEG_DATA_DIR)/landing: reusing it"; fi
	@# Segments as a shop had them when it sent the campaigns: lift then counts each send in the segment it was sent to.
	@if [ ! -f "$(SEG_DATA_DIR)/warehouse.duckdb" ]; then \
	  before="$$($(BIN)/python -m seg_assets.demo.campaigns "$(SEG_DATA_DIR)")"; \
	  if [ -n "$$before" ]; then echo "refresh as of $$before (before the first campaign)"; \
	    $(BIN)/seg-assets refresh --as-of "$$before" --no-summary || exit 1; fi; \
	fi
	$(BIN)/seg-assets refresh

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not e2e"

dictionary: $(STAMP)
	$(BIN)/python -c "from seg_assets.features.dictionary import write_readme; write_readme('README.md')"

ui: $(STAMP)
	home="$$($(BIN)/seg-assets init-dagster-home --print-path)" || exit 1; \
	echo "DAGSTER_HOME=$$home"; export DAGSTER_HOME="$$home"; \
	$(BIN)/dagster dev -w workspace.yaml -p $(UI_PORT)

bench: $(STAMP)
	$(BIN)/python bench/run.py --size $(SIZE) $(BENCH_ARGS)

eval-cdnow: $(STAMP)
	$(BIN)/seg-assets eval-cdnow --work-dir build/eval-cdnow

clean:
	rm -rf "$(SEG_DATA_DIR)" $(VENV)
