# One-command set-up, tests and book. Everything runs inside a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
BIN := $(VENV)/bin

.PHONY: setup test book book-student bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[book,dev]'
	touch $@

test: setup
	$(BIN)/pytest

book: setup
	$(BIN)/fernb book --profile $(PROFILE)

book-student: setup
	$(BIN)/fernb student-book

bench: setup
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_esr.py

clean:
	rm -rf _build book/_generated results .pytest_cache
