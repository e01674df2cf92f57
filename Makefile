# The two quick-start commands live here so the README, CI and a fresh clone
# agree: `make run` (set up, then run the consumer on the default home) and
# `make test` (set up, then run the whole test suite and the type check).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test reliability bench clean

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

# The long reliability runs (issue: reliability): hundreds of kills, thousands of
# fuzz cases, a multi-minute soak. CI runs them after `make test`.
reliability: $(STAMP)
	CODI_CRASH_ROUNDS=$${CODI_CRASH_ROUNDS:-25} CODI_FUZZ_EXAMPLES=$${CODI_FUZZ_EXAMPLES:-3000} \
	CODI_SOAK_SECONDS=$${CODI_SOAK_SECONDS:-120} CODI_SYNC_KILLS=$${CODI_SYNC_KILLS:-200} \
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_crash.py tests/reliability tests/test_multiprocess.py \
		tests/sync/test_kills.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
