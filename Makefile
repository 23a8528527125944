# The two README commands: `make demo` and `make test`. Both start from `make setup`, which
# works on a fresh machine: a virtualenv with the pinned versions, and the JVM artifacts
# (Kafka, Apicurio Registry, S3Proxy) fetched once with Maven into the cache
# (~/.cache/boxbus).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: setup jvm browser demo test lint typecheck contract unit clean

setup: $(STAMP) jvm

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "boxbus needs Python 3.11 or newer; set PYTHON=python3.11 (make PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,stack,peers,analytics,mail,documents]'
	rm -f $(VENV)/.installed-*
	touch $@

jvm: $(STAMP)
	$(BIN)/boxbus dev fetch

# The dashboard's test drives Debian's Chromium (Playwright's own browser download cannot work
# here); installed once when missing (CI runs as root; elsewhere set BOXBUS_CHROMIUM).
browser:
	@test -x "$${BOXBUS_CHROMIUM:-/usr/bin/chromium}" || { \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "the dashboard test needs Chromium: run 'sudo apt-get install chromium' once," \
	      "or set BOXBUS_CHROMIUM to a Chromium binary"; exit 1; fi; \
	  echo "installing Debian's chromium for the dashboard test (once) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null; }

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
test: setup browser lint typecheck contract
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

clean:
	-$(BIN)/boxbus dev down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
