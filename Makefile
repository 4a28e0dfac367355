# One-command set-up: `make test` and `make demo` create .venv (Python 3.11) from
# the committed lock file, install the FashionMNIST data when they can, then run.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
OUTPUT ?= output
export NM_DISABLE_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: all setup data test demo lock bench-round-time clean

all: test

setup: $(STAMP) data

$(STAMP): requirements/requirements.lock requirements/overrides.txt setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; TFF 0.87 needs Python 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is not Python 3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip -q
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	# Bytecode at install: uv writes none by default, and where PYTHONDONTWRITEBYTECODE
	# is set (as on this machine) every process then compiled TF and TFF anew
	# (benchmarks/process_start.py).
	$(UV) pip install --python $(PY) --compile-bytecode -r requirements/requirements.lock --override requirements/overrides.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $(STAMP)

data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing FashionMNIST (Debian package dataset-fashion-mnist)"; \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
	  echo "FashionMNIST is not installed. Run:  sudo apt-get install -y dataset-fashion-mnist"; \
	  echo "or pass --data_dir=DIR holding the four IDX .gz files to binaries/train.py"; \
	fi

# Tests that start processes, workers or namespaces and time them run after
# the rest has run on both cores (pytest-xdist, one class per worker), two
# classes at a time: they wait on their processes more than they compute
# (alone, they kept 1.2 cores busy on average: BUILD_NOTES "Measurements").
# In this order: test_train's in-process runs turn on TF's op determinism,
# which TFF's unseeded quantizer in test_scale_out refuses (loadscope hands
# out classes in this order, and a worker runs them in the order it got them).
SERIAL_TESTS := tests/test_execution.py tests/test_faults.py tests/test_scale_out.py \
	tests/test_scale_out_faults.py tests/test_train.py

test: setup
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=15 tests $(addprefix --ignore=,$(SERIAL_TESTS))
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=15 $(SERIAL_TESTS)

demo: setup
	$(PY) -m benchmarks.demo --output_dir=$(OUTPUT)/demo --rounds=20

bench-round-time: setup
	$(PY) -m benchmarks.round_time

# Recompile the lock (needs the registry); commit the result.
lock:
	$(UV) pip compile requirements/requirements.in --override requirements/overrides.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_31 -o requirements/requirements.lock

clean:
	rm -rf $(VENV) $(OUTPUT)
