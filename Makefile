# Every target creates .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test e2e soak lint bench bench-ab bench-instructions bench-streams clean tools tools-e2e

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m modelrouter serve

# The system tools the tests drive (tinyproxy, redis-server and redis-cli, promtool, chromium; nginx for
# e2e): installed when missing as root, else named with the one command that installs them.
# First, so that a missing tool stops `make test` before anything else runs.
tools:
	bash scripts/system-tools.sh test

tools-e2e:
	bash scripts/system-tools.sh e2e

test: tools $(STAMP)
	$(PY) -m pytest --cov=modelrouter --cov-report=term --cov-fail-under=85

# nginx in front of two gateway processes sharing the Redis on 127.0.0.1:6379 (db 12;
# MODELROUTER_E2E_REDIS_URL to use another), with deploy/nginx/modelrouter.conf.
e2e: tools-e2e $(STAMP)
	$(PY) -m pytest -m e2e tests/e2e

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

# make bench BENCH_ARGS="--redis --redis-delay-ms 1 --rounds 5 --scenario 'chat, 64'"
# With BENCH_DATABASE_URL (a PostgreSQL database of its own): also the `history` and
# `virtual key` rows (a key with an rpm, a tpm and a budget), and bench-instructions also
# measures that key against a static key.
BENCH_ARGS ?=
BENCH_DATABASE_URL ?=
BENCH_DB_ARGS = $(if $(BENCH_DATABASE_URL),--history $(BENCH_DATABASE_URL) --keys $(BENCH_DATABASE_URL))
bench: $(STAMP)
	$(PY) -m modelrouter.bench.suite $(BENCH_DB_ARGS) $(BENCH_ARGS)

# A/B against another revision (default: the parent commit), interleaved in the same rounds.
BASE ?= HEAD~1
bench-ab: $(STAMP)
	$(PY) -m modelrouter.bench.suite --rounds 3 --compare $(BASE)

# Instructions per request under valgrind (noise-free on a shared machine), against BASE.
# PATHS: the routes to measure (python -m modelrouter.bench.instructions --help lists them);
# INSTRUCTIONS_ARGS: more options (e.g. --few 50 --many 250 for a quicker, rougher figure;
# --routing-file: also this tree with a routing file of two deployments; --auth virtual;
# --hash-seed N: the gateways' PYTHONHASHSEED, 1 by default, or random).
PATHS ?= /chat,/stream
INSTRUCTIONS_ARGS ?=
bench-instructions: $(STAMP)
	$(PY) -m modelrouter.bench.instructions --compare $(BASE) --paths '$(PATHS)' $(INSTRUCTIONS_ARGS)
	$(if $(BENCH_DATABASE_URL),$(PY) -m modelrouter.bench.instructions --auth static --database-url $(BENCH_DATABASE_URL) --paths '$(PATHS)')
	$(if $(BENCH_DATABASE_URL),$(PY) -m modelrouter.bench.instructions --auth virtual --database-url $(BENCH_DATABASE_URL) --paths '$(PATHS)')

bench-streams: $(STAMP)
	$(PY) -m modelrouter.bench.suite --seconds 1 --rounds 1 --open-streams 10000
