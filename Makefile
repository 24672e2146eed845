# wschaos: every target sets itself up from scratch on a machine that has only Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
REPORT ?= reports/reference

.PHONY: install test test-all lint demo certify flake-check bench autobahn mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy balancer harness scenarios

# The whole suite but the slow full-certification self-tests. pytest exits 5 when it
# collects nothing; that is a failure here, since this suite is never empty.
test: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 -m "not slow" -p no:randomly --durations=25 $(PYTEST_ARGS)

# Everything, including `certify --profile quick` of every mutant build.
test-all: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m harness demo

certify: $(STAMP)
	$(BIN)/python -m harness certify --profile quick --report $(REPORT)

# A full `certify --profile quick` of every mutant build (and the control): prints the mutant
# table and writes it to docs/mutants.md. Fails if a mutant is not caught naming its invariant.
mutation: $(STAMP)
	$(BIN)/python tests/selftest/mutation_table.py --out docs/mutants.md

# The ci chaos suite (`certify --profile ci`) N times against the reference balancer: one line per
# run, then a summary naming the report and run directories of every failure (docs/architecture.md).
N ?= 20
flake-check: $(STAMP)
	$(BIN)/python -m harness.flakecheck --runs $(N) --report-dir reports/flake

BENCH_STAMP := $(VENV)/.bench-installed-stamp
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# The Toxiproxy overhead, then the balancer against direct, HAProxy and nginx (about 10 minutes;
# writes reports/balancer_bench.json, docs/performance.md and docs/balancer_bench.png). Slow parts
# are flags: BENCH_ARGS="--sessions 1000,5000,10000 --harness".
bench: $(BENCH_STAMP)
	$(BIN)/python bench/toxiproxy_overhead.py --loop both --plot docs/toxiproxy_overhead.png
	$(BIN)/python bench/balancer_bench.py $(BENCH_ARGS)

# Autobahn cases direct vs through the reference balancer (about 25 minutes).
autobahn: $(STAMP)
	$(BIN)/python bench/autobahn_compare.py

clean:
	rm -rf $(VENV) reports runs .hypothesis
