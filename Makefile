# wschaos: every target sets itself up from scratch on a machine that has only Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
REPORT ?= reports/reference

.PHONY: install test test-all lint demo certify bench autobahn clean

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
	$(BIN)/python -m pytest -n 2 -m "not slow" -p no:randomly $(PYTEST_ARGS)

# Everything, including `certify --profile quick` of every mutant build.
test-all: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m harness demo

certify: $(STAMP)
	$(BIN)/python -m harness certify --profile quick --report $(REPORT)

bench: $(STAMP)
	$(BIN)/python bench/toxiproxy_overhead.py --loop both --plot docs/toxiproxy_overhead.png

# Autobahn cases direct vs through the reference balancer (about 25 minutes).
autobahn: $(STAMP)
	$(BIN)/python bench/autobahn_compare.py

clean:
	rm -rf $(VENV) reports runs .hypothesis
