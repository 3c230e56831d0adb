# The one entry point for humans and CI.  `make test` and `make run` install what
# they need on a fresh machine: a pinned uv in .uvboot/, the locked virtual
# environment in .venv/, and a redis-server binary when none is on PATH; `make test`
# also installs Prometheus (promtool and the server, for the observability tests).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .uvboot/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: all install redis prometheus lint types test unit component system run bench chaos soak clean

all: test

$(UV):
	$(PYTHON) -m venv .uvboot
	.uvboot/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/switchboard: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

install: $(BIN)/switchboard redis

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server not found: install it (e.g. 'sudo apt-get install redis-server') and run make again" >&2; \
	    exit 1; \
	  fi; }

prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "prometheus/promtool not found: install them (e.g. 'sudo apt-get install prometheus') and run make again" >&2; \
	    exit 1; \
	  fi; }

lint: $(BIN)/switchboard
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(BIN)/switchboard
	$(BIN)/mypy

test: install prometheus lint types
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

# Real redis-server, Celery workers, uvicorn and the emulator.
component: install
	$(BIN)/pytest -q -p no:cacheprovider tests/component

# Whole stacks, Prometheus included (tests/system/test_prometheus_stack.py).
system: install prometheus
	$(BIN)/pytest -q -p no:cacheprovider tests/system

run: install
	$(BIN)/switchboard up --demo

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Every chaos test at full size (tests/chaos/conftest.py); not part of `make test`.
chaos: install
	SWITCHBOARD_CHAOS_SIZE=full $(BIN)/pytest -q -p no:cacheprovider tests/chaos --deselect tests/chaos/test_soak.py::test_soak

# 10 minutes at 300 concurrent calls with random faults; figures in tests/chaos/results/.
soak: install
	SWITCHBOARD_SOAK_S=600 SWITCHBOARD_SOAK_CALLS=300 $(BIN)/pytest -q -p no:cacheprovider tests/chaos/test_soak.py

clean:
	rm -rf $(VENV) .uvboot .switchboard .mypy_cache .ruff_cache
