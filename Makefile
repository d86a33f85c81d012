# Two commands on a fresh machine: `make run` (the main job on the embedded PostgreSQL)
# and `make test` (the whole suite). Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run dev feast-ui api test test-embedded lint browser compose db-stop clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/streamflow run

# The Dagster UI on http://127.0.0.1:3000, with the runs of `make run`.
dev: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/streamflow dev

# Feast's UI over feature_repo/ on http://127.0.0.1:8888.
feast-ui: $(VENV)/.installed
	$(BIN)/streamflow feast-ui

# The online feature API on http://127.0.0.1:8000 (docs at /docs).
api: $(VENV)/.installed
	$(BIN)/streamflow api

# Debian's chromium for the browser tests (as root, or `sudo make browser`).
CHROMIUM ?= /usr/bin/chromium
browser: $(CHROMIUM)
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Debian's docker-compose, to validate docker/compose.yaml (Docker itself is not needed).
COMPOSE ?= /usr/bin/docker-compose
compose: $(COMPOSE)
$(COMPOSE):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose

# Against STREAMFLOW_TEST_DATABASE_URL when set, else the embedded PostgreSQL.
test: $(VENV)/.installed-dev lint $(CHROMIUM) $(COMPOSE)
	$(BIN)/pytest

# The smoke tests on the embedded PostgreSQL, whatever STREAMFLOW_TEST_DATABASE_URL says.
test-embedded: $(VENV)/.installed-dev
	env -u STREAMFLOW_TEST_DATABASE_URL -u STREAMFLOW_DATABASE_URL $(BIN)/pytest -m smoke

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

db-stop: $(VENV)/.installed
	$(BIN)/streamflow db stop

clean:
	rm -rf $(VENV) .streamflow
