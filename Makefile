# Every target creates or refreshes .venv itself; the stamp file makes the second run fast.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/bedside-gateway run --config config.toml --log-format console

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check drivers gateway tests bench
	$(BIN)/ruff format --check drivers gateway tests bench
	$(BIN)/mypy drivers gateway

bench: $(STAMP)
	$(BIN)/python bench/serial_codecs.py
	$(BIN)/python bench/ward.py --beds 16 --seconds 15

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
