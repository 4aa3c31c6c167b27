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
	@test -d book/_generated || (echo "run 'make book' first" && exit 1)
	mkdir -p _build
	$(BIN)/python -c "import yaml; c = yaml.safe_load(open('_config.yml')); \
	  c['sphinx']['config']['hide_solutions'] = True; \
	  yaml.safe_dump(c, open('_build/student_config.yml', 'w'))"
	$(BIN)/jupyter-book build . --config _build/student_config.yml \
	  --path-output _build/student --warningiserror
	@echo "student book (no solutions): _build/student/_build/html/index.html"

bench: setup
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_esr.py

clean:
	rm -rf _build book/_generated results .pytest_cache
