# Every target creates .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint soak bench bench-streams clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m modelrouter serve

test: $(STAMP)
	$(PY) -m pytest --cov=modelrouter --cov-report=term --cov-fail-under=85

# A minute of mixed traffic, random faults and disconnects against one gateway process; then
# connections, tasks, stream slots and RSS must be back to their level (tests/soak.py).
soak: $(STAMP)
	$(PY) -m tests.soak

lint: $(STAMP)
	$(VENV)/bin/ruff check modelrouter tests
	$(VENV)/bin/ruff format --check modelrouter tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov

bench: $(STAMP)
	$(PY) -m modelrouter.bench.suite

bench-streams: $(STAMP)
	$(PY) -m modelrouter.bench.suite --seconds 1 --rounds 1 --open-streams 10000
