# deskq: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with deskq and its development tools

demo: setup  ## a throwaway workspace: SQLite plus the bundled demo mailbox
	$(BIN)/deskq demo

test: setup  ## the whole test suite (server-backed tests skip with a reason if absent)
	$(BIN)/python -m pytest

lint: setup  ## ruff, formatting, mypy on mail/ and store/, the layering contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy mail store
	$(BIN)/lint-imports

bench: setup  ## benchmarks under tests/bench (each prints one JSON line)
	$(BIN)/python tests/bench/ingest.py
	$(BIN)/python tests/bench/tui.py
	$(BIN)/python tests/bench/reply.py
	$(BIN)/python tests/bench/report.py
	$(BIN)/python tests/bench/team.py

clean:
	rm -rf $(VENV) demo-workspace .pytest_cache .mypy_cache .ruff_cache
