# Two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed
DATABASE_URL ?= sqlite:///recgrpc.db
PROTOS := $(wildcard protos/recgrpc/v1/*.proto)

CHROMIUM := /usr/bin/chromium

.PHONY: install lowest run test lint typecheck proto check-proto bench demo clean browser screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[server,dev]"
	touch $(STAMP)

install: $(STAMP)

## lowest: a second venv with the client's dependencies at the lowest versions pyproject allows
## (plus what its tests need); tests/test_client_lowest.py runs the client tests in it
$(LOWEST_STAMP): pyproject.toml tests/lowest_versions.py
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(PYTHON) tests/lowest_versions.py > $(LOWEST_VENV)/requirements.txt
	$(LOWEST_VENV)/bin/pip install --quiet -r $(LOWEST_VENV)/requirements.txt
	$(LOWEST_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(LOWEST_STAMP)

lowest: $(LOWEST_STAMP)

## run: install, migrate SQLite, load demo data, train, score churn, serve gRPC (:50051),
## metrics (:9464) and the dashboard (http://localhost:8088/)
run: $(STAMP)
	$(BIN)/recgrpc --database-url $(DATABASE_URL) migrate
	$(BIN)/recgrpc --database-url $(DATABASE_URL) demo
	$(BIN)/recgrpc --database-url $(DATABASE_URL) train
	$(BIN)/recgrpc --database-url $(DATABASE_URL) train-churn
	$(BIN)/recgrpc --database-url $(DATABASE_URL) score-churn
	$(BIN)/recgrpc --database-url $(DATABASE_URL) serve

## browser: Debian's Chromium for the dashboard's browser tests, installed only when missing
$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-liberation

browser: $(CHROMIUM)

## test: install (both venvs and Chromium), then the whole suite (PostgreSQL too when
## RECGRPC_TEST_DATABASE_URL is set)
test: $(STAMP) $(LOWEST_STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## proto: regenerate src/recgrpc/v1 from protos/ (checked in; tests fail on drift)
proto: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=src --grpc_python_out=src \
		--mypy_out=src --mypy_grpc_out=src $(PROTOS)

## screenshots: regenerate docs/screenshots/*.png (the README's) from the browser tests on SQLite
screenshots: $(STAMP) $(CHROMIUM)
	RECGRPC_SCREENSHOTS_DIR=$(abspath docs/screenshots) RECGRPC_TEST_DATABASE_URL= \
		$(BIN)/pytest -q tests/test_dashboard.py

bench: $(STAMP)
	$(BIN)/python bench/harness.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) recgrpc.db build dist *.egg-info src/*.egg-info
