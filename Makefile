# wschaos: every target sets itself up from scratch on a machine that has only Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
REPORT ?= reports/reference

.PHONY: install bytecode test test-all lint demo certify flake-check bench autobahn mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Every client swarm, backend and build process imports these modules as it starts, hundreds of
# times in a test run. Python writes no bytecode cache when PYTHONDONTWRITEBYTECODE is set (it is
# on this kind of machine), so each start would compile them again: 15% of a swarm's start-up CPU.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q balancer harness scenarios tests/selftest/mutants

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy balancer harness scenarios bench

# The whole suite but the slow full-certification self-tests. pytest exits 5 when it
# collects nothing; that is a failure here, since this suite is never empty.
# Four workers on two cores: a chaos test mostly waits on its scenarios' phases, so two workers
# left the cores half idle; four keep them 72-85% busy. The certifications inside share certify's
# lanes among the workers (tests/selftest/test_mutants.py), so the machine is not overloaded.
test: $(STAMP) lint bytecode
	$(BIN)/python -m pytest -n 4 -m "not slow" -p no:randomly --durations=25 $(PYTEST_ARGS)

# Everything, including `certify --profile quick` of every mutant build.
test-all: $(STAMP) lint bytecode
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m harness demo

certify: $(STAMP) bytecode
	$(BIN)/python -m harness certify --profile quick --report $(REPORT)

# A full `certify --profile quick` of every mutant build (and the control): prints the mutant
# table and writes it to docs/mutants.md. Fails if a mutant is not caught naming its invariant.
mutation: $(STAMP) bytecode
	$(BIN)/python tests/selftest/mutation_table.py --out docs/mutants.md

# The ci chaos suite (`certify --profile ci`) N times against the reference balancer: one line per
# run, then a summary naming the report and run directories of every failure (docs/architecture.md).
N ?= 20
flake-check: $(STAMP) bytecode
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
