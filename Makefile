# One-command set-up, tests and book. Everything runs inside a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
BIN := $(VENV)/bin

.PHONY: setup test book book-student course bench lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[book,dev]'
	touch $@

test: setup
	$(BIN)/pytest

book: setup
	$(BIN)/fernb book --profile $(PROFILE)

book-student: setup
	$(BIN)/fernb student-book

# The course's two releases (fernb.course): the student's, checked for any solution's text,
# and the instructor's; each holds its book's HTML when `make book book-student` built it.
course: setup
	$(BIN)/fernb course build --student _build/course/student
	$(BIN)/fernb course build --instructor _build/course/instructor

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_esr.py

# The exact versions of the current environment, for `make setup`, CI and environment.yml.
lock: setup
	{ sed -n '1,/^# ranges/p' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf _build book/_generated results .pytest_cache
