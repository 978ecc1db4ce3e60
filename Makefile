# Sluice: `make demo` runs it with demo data, `make test` runs the tests. `make help` lists the rest.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first interpreter that is Python 3.12 or newer (Django 6 needs it).
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' \
	>/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: help demo run test test-fast lint format migrate services bench bench-review bench-dashboard loadtest chaos clean check-python

help:
	@echo "make demo      run Sluice with demo data at http://127.0.0.1:$(PORT) (embedded SQLite)"
	@echo "make run       run Sluice without demo data"
	@echo "make test      install the development dependencies and run the whole test suite"
	@echo "make lint      ruff (lint and format check) and the migrations check"
	@echo "make format    format the code with ruff"
	@echo "make migrate   apply database migrations"
	@echo "make services  install and start PostgreSQL and Redis on 127.0.0.1 (Debian, as root)"
	@echo "make bench     measure throughput and write docs/benchmarks.md (PostgreSQL + Redis when"
	@echo "               DATABASE_URL and REDIS_URL are set, and embedded SQLite)"
	@echo "make bench-review  measure claim-next latency with 100,000 open review tasks and 8"
	@echo "               reviewers and write docs/benchmarks.md (PostgreSQL: DATABASE_URL)"
	@echo "make bench-dashboard  measure dashboard page time and live-ticker queries with 10"
	@echo "               million items and write docs/benchmarks.md (PostgreSQL: DATABASE_URL)"
	@echo "make loadtest  load-test a private Sluice through the API (LOADTEST_ARGS=...)"
	@echo "make chaos     run the chaos scenarios of bench/chaos/, each with a verdict"
	@echo "make clean     remove the virtual environment and local data (var/)"

check-python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "Sluice needs Python 3.12 or newer (Django 6 requires it), and none was found."; \
		echo "Install python3.12 or python3.13, or run: make PYTHON=/path/to/python3.12 demo"; \
		exit 1; \
	fi

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs what was tested: the versions pinned in constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py createcachetable

demo: migrate
	$(BIN)/python manage.py seed_demo
	PORT=$(PORT) $(BIN)/python manage.py serve --demo-traffic

run: migrate
	PORT=$(PORT) $(BIN)/python manage.py serve

test: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

services:
	bash .ci/services.sh

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)

bench-review: $(VENV)/.installed-dev
	$(BIN)/python -m bench.review_claims $(BENCH_ARGS)

bench-dashboard: $(VENV)/.installed-dev
	$(BIN)/python -m bench.dashboard $(BENCH_ARGS)

loadtest: $(VENV)/.installed-dev
	$(BIN)/python manage.py loadtest $(LOADTEST_ARGS)

chaos: $(VENV)/.installed-dev
	$(BIN)/python -m bench.chaos.provider_outage
	$(BIN)/python -m bench.chaos.burst
	$(BIN)/python -m bench.chaos.bad_config

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
