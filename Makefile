# The two commands a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv lint typecheck unit bench clean

$(BIN)/certkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/certkit

venv: $(BIN)/certkit

demo: venv
	$(BIN)/certkit lab demo

lint: venv
	$(BIN)/ruff check certkit tests bench
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
