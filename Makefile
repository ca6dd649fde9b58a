# Quick start: `make demo` (sets up and reconstructs the shipped examples), `make test` (sets up and runs the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.brgm-installed
PYTEST_ARGS ?=
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data test demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST for the tests: Debian's package, installed where that is possible (root, apt-get), unless
# BRGM_DATA_DIR or BRGM_SYSTEM_DATA_DIR (empty: hide it) says where the data are. Never fails: without
# the data, the tests that need them are skipped, and pytest's summary says so in one line.
data:
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || [ -n "$${BRGM_DATA_DIR:-}" ] \
	  || [ -n "$${BRGM_SYSTEM_DATA_DIR+set}" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q dataset-fashion-mnist \
	  || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; } \
	  || echo "Could not install dataset-fashion-mnist; the tests that need Fashion-MNIST will be skipped."; \
	else \
	  echo "Fashion-MNIST is not installed and cannot be here (needs root and apt-get): the tests that need it" \
	    "will be skipped; run \`sudo apt-get install dataset-fashion-mnist\` or set BRGM_DATA_DIR to run them."; \
	fi

test: $(STAMP) data
	$(PY) -m pytest -q $(PYTEST_ARGS)

# demo-output/ is the demo's own folder: each `make demo` replaces what the one before wrote there
# (--force); `make clean` removes it.
demo: $(STAMP)
	$(PY) -m brgm_pyro.cli demo --out demo-output --force

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf demo-output .pytest_cache
