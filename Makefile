# The two README commands: `make demo` and `make test`. Both start from `make setup`, which
# works on a fresh machine: a virtualenv with the pinned versions, and the JVM artifacts
# (Kafka, Apicurio Registry) fetched once with Maven into the cache (~/.cache/boxbus).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: setup jvm demo test lint typecheck contract unit clean

setup: $(STAMP) jvm

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "boxbus needs Python 3.11 or newer; set PYTHON=python3.11 (make PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,stack,peers]'
	rm -f $(VENV)/.installed-*
	touch $@

jvm: $(STAMP)
	$(BIN)/boxbus dev fetch

demo: setup
	$(BIN)/boxbus demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The contract's gate: models follow the schemas, schemas keep reading every released version.
contract: $(STAMP)
	$(BIN)/boxbus schemas codegen --check
	$(BIN)/boxbus schemas check

# The suite starts the embedded stack itself (session fixtures) and stops it at the end.
test: setup lint typecheck contract
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

clean:
	-$(BIN)/boxbus dev down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
