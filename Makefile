# One command surface: people, CI and pre-commit run these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The configuration every command reads by default; `make run` creates it on first use.
CONFIG ?= config.toml
# Test processes: 2 by default (the reference machine has 2 cores); `make test JOBS=1` to serialise.
JOBS   ?= 2

.PHONY: install lint format typecheck test test-fast run bench clean

# setup.py and the C sources too: `make install` compiles them in place (setup.py).
$(BIN)/.installed: pyproject.toml setup.py relay/detect/_tagscan.c relay/smtp/_octets.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench

format: install
	$(BIN)/ruff format relay tests bench
	$(BIN)/ruff check --fix relay tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n $(JOBS) --dist loadgroup

test-fast: install
	$(BIN)/pytest -n $(JOBS) --dist loadgroup -m "not browser and not slow"

# Starts the relay with the embedded Redis and the file: outbox (./var/outbox); Ctrl-C stops it.
# On first use it writes config.toml from config.example.toml with freshly generated secrets.
run: install
	@test -f $(CONFIG) || $(BIN)/relay init --config $(CONFIG)
	mkdir -p var/outbox
	$(BIN)/relay serve --config $(CONFIG)

bench: install
	$(BIN)/python bench/smtp_bench.py
	$(BIN)/python bench/filter_bench.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
