# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint sim install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Start the server on http://localhost:8000 (services configured through KYUTAI_* variables).
run: $(STAMP)
	$(BIN)/unmute-trio serve

## Start the four protocol-exact simulators on the original's default ports.
sim: $(STAMP)
	$(BIN)/unmute-trio sim

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Install dev dependencies, run ruff and the whole pytest suite.
test: $(STAMP)
	bash scripts/test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
