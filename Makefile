# The two quick-start commands live here so the README, CI and a fresh clone
# agree: `make run` (set up, then run the consumer on the default home) and
# `make test` (set up, then run the whole test suite and the type check).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
	$(BIN)/python -m compileall -q codi_queue
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/codi-queue run

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
