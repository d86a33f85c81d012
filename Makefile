# Two commands on a fresh machine: `make run` (the main job on the embedded PostgreSQL)
# and `make test` (the whole suite). Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run dev mlflow feast-ui api test test-embedded lint lock graph browser compose redis db-stop clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Dependencies at the versions in the lock files (reproducible installs), then the project itself.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# After changing dependencies in pyproject.toml: resolve both lock files again (with uv).
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet
lock: $(BIN)/python
	$(BIN)/pip install --quiet uv
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

# The asset graph as text; the tests compare it with docs/asset_graph.txt.
graph: $(VENV)/.installed
	$(BIN)/streamflow graph > docs/asset_graph.txt

run: $(VENV)/.installed
	$(BIN)/streamflow run

# The Dagster UI on http://127.0.0.1:3000, with the runs of `make run`.
dev: $(VENV)/.installed
	$(BIN)/streamflow dev

# MLflow's UI over the churn model's runs and registry on http://127.0.0.1:5000.
mlflow: $(VENV)/.installed
	$(BIN)/streamflow mlflow ui

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

# redis-server: the Redis Cluster the online-store tests start (three masters on local ports).
REDIS_SERVER ?= /usr/bin/redis-server
redis: $(REDIS_SERVER)
$(REDIS_SERVER):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

# Against STREAMFLOW_TEST_DATABASE_URL when set, else the embedded PostgreSQL; the Redis tests
# against STREAMFLOW_TEST_REDIS_URL, else the Redis at 127.0.0.1:6379 (skipped if none answers).
test: $(VENV)/.installed-dev lint $(CHROMIUM) $(COMPOSE) $(REDIS_SERVER)
	$(BIN)/pytest

# The smoke tests on the embedded PostgreSQL, whatever STREAMFLOW_TEST_DATABASE_URL says.
test-embedded: $(VENV)/.installed-dev
	env -u STREAMFLOW_TEST_DATABASE_URL -u STREAMFLOW_DATABASE_URL $(BIN)/pytest -m smoke

# Style, and the architecture contracts of pyproject.toml (the tests run them too, with dg check).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

db-stop: $(VENV)/.installed
	$(BIN)/streamflow db stop

clean:
	rm -rf $(VENV) .streamflow
