# The README's two commands: `make bench` (the main job) and `make test` (the whole test suite).
# Both create .venv and install everything the project needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastrnn-installed
# CUDA architectures of the extension; CI builds just one to stay fast.
export FASTRNN_CUDA_ARCHS ?= 80;90a

.PHONY: install test bench clean

$(STAMP): requirements.txt pyproject.toml setup.py $(wildcard csrc/* csrc/cpu/* kernels/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	# --no-build-isolation: setup.py needs the torch installed above to build fastrnn._C.
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(VENV)/bin/fastrnn-bench

clean:
	rm -rf build dist fastrnn/*.so fastrnn/_build_info.py *.egg-info $(VENV)
