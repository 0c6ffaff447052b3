# so-im — the two commands are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROTOS  := $(wildcard schema/*.proto)

.PHONY: run test proto lint bench keys services clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

keys: $(STAMP)
	$(BIN)/soimctl keys generate --if-missing

run: $(STAMP) keys
	@echo "so-im: starting a local cluster (SQLite in var/data, zeroconf on 127.0.0.1)."
	@echo "so-im: in another terminal run:  $(BIN)/soim      (Ctrl-C here stops the cluster)"
	@echo "so-im: or open http://127.0.0.1:$${SOIM_GATEWAY1_WEB_PORT:-8080}/ in a browser"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -e /dev/null

services:
	@bash tools/ensure_services.sh

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

proto: $(STAMP)
	$(BIN)/python -m tools.protogen
	$(BIN)/python -m tools.protodoc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) keys
	$(BIN)/soimctl bench fabric --json
	$(BIN)/soimctl bench store --json --backend sqlite

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache .hypothesis
