# crossview: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.crossview-installed

.PHONY: install demo test lint clean

# Idempotent: the venv is created once; the editable install is redone only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline offline on a synthetic town with the shipped model (demo-out/: results, figure, summary).
demo: install
	$(BIN)/crossview demo --out demo-out

test: install
	$(BIN)/python -m pytest -n 2

lint: install
	$(BIN)/ruff check crossview tests
	$(BIN)/ruff format --check crossview tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
