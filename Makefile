# spiral-mcp. `make run` serves on an embedded PostgreSQL with demo data (no DATABASE_URL needed);
# `make test` runs the whole suite; `make help` lists every target. Each installs what it needs
# into .venv first: the server alone for run, the development tools too for the others.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per layer: the server's own packages, then the development extras on top of them. A
# change to setup.cfg or pyproject.toml renews the first, and so the second.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: help install install-dev run test lint conformance bench wheel clean
.DEFAULT_GOAL := help

help: ## list the targets
	@echo "spiral-mcp: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spiral-mcp needs Python 3.11 or newer; set PYTHON=python3.11")'
	@echo "==> installing spiral-mcp into $(VENV) (the first time takes a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e .
	@touch $@

$(DEV_STAMP): $(STAMP)
	@echo "==> installing the development tools (pytest, the MCP SDK, ruff) into $(VENV)"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $@

install: $(STAMP) ## install the server into .venv

install-dev: $(DEV_STAMP) ## install the server and the development tools into .venv

run: install ## serve on http://127.0.0.1:8055 (PORT to change), embedded PostgreSQL, demo data
	$(BIN)/spiral-mcp serve

test: install-dev ## run the whole test suite (PYTEST_ARGS to pass arguments)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev ## check the code with ruff
	$(BIN)/ruff check .

conformance: install-dev ## run the MCP conformance suites of tests/conformance_suites.py (needs npx; SUITE=NAME for one; BALANCED=K: K processes behind HAProxy)
	$(BIN)/python -m tests.conformance_harness --suite $(or $(SUITE),all)$(if $(BALANCED), --balanced $(BALANCED))

bench: install-dev ## run the benchmarks
	$(BIN)/python -m bench.run

wheel: install ## build the wheel into dist/ (for uvx or pipx run: README, Local clients)
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .

clean: ## remove .venv, build files, caches, the test database and the tests' npm packages
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .test-pg tests/oidc/node_modules
