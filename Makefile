# durable_django: `make demo` runs the examples with no servers, `make test` runs everything.
#
# The test suite's servers come from the environment, passed through to every command below:
#   DATABASE_URL  PostgreSQL; the tests create and drop the database test_<its name>
#                 (default postgres://postgres@127.0.0.1:5432/durable_django: test_durable_django)
#   REDIS_URL     Redis database the integration tests empty (FLUSHDB) before and after each test
#                 (default redis://127.0.0.1:6379/15)
# The admin's browser tests need Chromium: `make chromium` installs it (they are skipped without it).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check
# A Python >= 3.12 for the Django 6 line, when this machine has one.
NEW_PYTHON ?= $(shell bash scripts/newest_python.sh)
VENV6 ?= .venv-django6
export PYTHONPATH := $(CURDIR)

CHROMIUM ?= /usr/bin/chromium
# The browser tests drive the Chromium at this path.
export DURABLE_CHROMIUM ?= $(CHROMIUM)

VENV_BENCH ?= .venv-bench
# e.g. make bench BENCH_ARGS=--quick
BENCH_ARGS ?=

.PHONY: help venv chromium demo test lint check pytest pytest-sqlite test-django6 screenshots bench clean

help:
	@echo "make demo   run every example workflow end to end (embedded SQLite + in-process queue)"
	@echo "make test   install and run the whole suite: lint, checks, tests (PostgreSQL, Redis, rqworker)"
	@echo "            (DATABASE_URL and REDIS_URL choose the servers; see the top of this Makefile)"
	@echo "make chromium  install Debian's Chromium (apt-get, with sudo) for the admin's browser tests"
	@echo "make bench  measure durable_django next to Celery, RQ and DBOS (BENCH_ARGS=--quick for a short run)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The admin's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
# An explicit step (it runs apt-get, with sudo when not root): no other target runs it.
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

demo: venv
	$(PY) manage.py migrate --verbosity 0
	$(PY) manage.py run_examples

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DURABLE_TEST_DATABASE=sqlite $(VENV)/bin/mypy

check: venv
	$(PY) manage.py check --fail-level WARNING
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django check --fail-level WARNING
	DURABLE_TEST_DATABASE=sqlite DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations --check --dry-run

pytest: venv
	$(PY) -m pytest

pytest-sqlite: venv
	DURABLE_TEST_DATABASE=sqlite $(PY) -m pytest -m "not integration" -q

test-django6:
	@if [ -z "$(NEW_PYTHON)" ]; then echo "No Python >= 3.12 here: skipping the Django 6 run"; exit 0; fi; \
	set -e; \
	if [ ! -f $(VENV6)/.installed ] || [ pyproject.toml -nt $(VENV6)/.installed ]; then \
	  $(NEW_PYTHON) -m venv --clear $(VENV6); \
	  $(VENV6)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip; \
	  $(VENV6)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev]' 'django>=6.0,<7'; \
	  touch $(VENV6)/.installed; \
	fi; \
	$(VENV6)/bin/python -c 'import django; print("Django", django.get_version())'; \
	DURABLE_TEST_DATABASE=sqlite DJANGO_SETTINGS_MODULE=tests.settings $(VENV6)/bin/python -m django makemigrations --check --dry-run; \
	$(VENV6)/bin/python -m pytest -q

test: lint check pytest pytest-sqlite test-django6

# The benchmark's peers (Celery, DBOS) live in a virtualenv of their own, never in the app's.
$(VENV_BENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_BENCH)/bin/python -m pip install $(PIP_FLAGS) -e '.[bench,embedded]'
	touch $@

bench: $(VENV_BENCH)/.installed
	$(VENV_BENCH)/bin/python -m benchmarks.runner $(BENCH_ARGS)

screenshots: venv chromium
	$(PY) scripts/admin_screenshots.py $(or $(OUT),screenshots) --docs docs/images

clean:
	rm -rf $(VENV) $(VENV6) example.sqlite3 .pytest_cache .ruff_cache
