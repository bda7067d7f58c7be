# The two commands of the README:
#   make run   - create .venv if needed, install Buzón, run it on the embedded default
#   make test  - install with test extras, then lint, type-check, check boundaries, test
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Test processes: most tests wait on real daemons, Dovecot and PostgreSQL, so two workers
# halve the suite on a 2-core machine (940 -> 550 s). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2

.PHONY: run test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(VENV)/bin/buzon run

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal
