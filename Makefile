# Two commands on a fresh machine: `make run` (the main job on the embedded PostgreSQL)
# and `make test` (the whole suite). Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run dev test test-embedded lint db-stop clean

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

# Against STREAMFLOW_TEST_DATABASE_URL when set, else the embedded PostgreSQL.
test: $(VENV)/.installed-dev lint
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
