# The two commands of the README: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
N ?= 100000

.PHONY: setup run test lint typecheck unit integration bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(BIN)/hrtrack dev

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy shared services hrtrack bench tests

test: setup lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: setup
	$(BIN)/python -m pytest -q tests/unit

bench: setup
	$(BIN)/python -m bench.run --n $(N)

clean:
	rm -rf $(VENV) .hrtrack .pytest_cache .mypy_cache .ruff_cache
