# spiral-mcp: `make run` serves on an embedded PostgreSQL with demo data (no DATABASE_URL needed);
# `make test` runs the whole suite. Both install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFORMANCE_SUITE := npx -y -p node@22 -p @modelcontextprotocol/conformance@0.1.16 conformance

.PHONY: install run test lint conformance bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spiral-mcp needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

run: install
	$(BIN)/spiral-mcp serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

conformance: install
	$(BIN)/python -m tests.conformance_harness -- $(CONFORMANCE_SUITE)

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .test-pg
