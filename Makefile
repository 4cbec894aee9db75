# Set-up and entry points. Every target creates what it needs, so on a fresh machine
#   make demo   runs the main job;   make test   runs the whole test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

PYTHON   ?= python3
VENV     := .venv
VENV37   := .venv37
# Python 3.7 (for the MindSpore Lite 2.0.0 wheel, CPython 3.7 only) comes from pyenv.
PY37     ?= $(shell pyenv root 2>/dev/null)/versions/$(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.7(\.|$$)' | tail -n 1)/bin/python
BUILD_DEPS := "scikit-build-core>=0.10" "pybind11>=2.10" cmake ninja
EDITABLE := --no-build-isolation -Cbuild-dir=build/{wheel_tag}
JOBS     ?= $(shell nproc)

.PHONY: sysdeps demo test test-slow test-py test-py37 test-wheel memcheck fuzz venv venv37 native clean

# System packages: libjpeg-turbo headers for the engine, cjpeg for test images (arithmetic
# coding, restart markers). Installed with apt-get when missing and we are root.
SYSDEPS_CHECK := dpkg -s libjpeg62-turbo-dev >/dev/null 2>&1 && command -v cjpeg >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1
sysdeps:
	@if ! { $(SYSDEPS_CHECK); }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjpeg62-turbo-dev libjpeg-turbo-progs g++; \
	  else \
	    echo "missing system packages: run 'sudo apt-get install libjpeg62-turbo-dev libjpeg-turbo-progs g++'"; exit 2; \
	  fi; \
	fi

$(VENV)/.stamp: pyproject.toml | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q $(BUILD_DEPS)
	$(VENV)/bin/pip install -q $(EDITABLE) -e ".[train,onnx,bench,test]"
	touch $@

$(VENV37)/.stamp: pyproject.toml | sysdeps
	@test -x "$(PY37)" || { echo "Python 3.7 not found: install it with 'pyenv install 3.7' or pass PY37=/path/to/python3.7"; exit 2; }
	$(PY37) -m venv $(VENV37)
	$(VENV37)/bin/pip install -q -U pip
	$(VENV37)/bin/pip install -q $(BUILD_DEPS)
	$(VENV37)/bin/pip install -q $(EDITABLE) -e ".[lite,onnx,test]"
	touch $@

venv: $(VENV)/.stamp
venv37: $(VENV37)/.stamp

# Rebuild the native module in place for both interpreters after editing cpp/.
native: venv venv37
	$(VENV)/bin/pip install -q $(EDITABLE) -e . --no-deps
	$(VENV37)/bin/pip install -q $(EDITABLE) -e . --no-deps

# The default suite skips tests marked slow (every model variant at full size, big corpora);
# `make test-slow` runs those, before an issue is resolved.
test-py: venv
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

test-py37: venv37
	$(VENV37)/bin/python -m pytest -q -m "not slow" tests

test-slow: venv venv37
	$(VENV)/bin/python -m pytest -q -m slow tests
	$(VENV37)/bin/python -m pytest -q -m slow tests

# A regular (non-editable) wheel installs and imports outside the source tree.
test-wheel: venv
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(VENV)/bin/pip wheel -q --no-build-isolation --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install -q --no-deps build/wheel-check/ibnedge-*.whl
	cd build/wheel-check && venv/bin/python -c "import ibnedge._native as n; print('wheel ok: ibnedge._native', n.__version__)"

# The engine under AddressSanitizer/UBSan/LeakSanitizer, and a bounded libFuzzer run.
memcheck: venv
	PYTHON=$(abspath $(VENV))/bin/python bash tests/memcheck.sh

fuzz: venv
	PYTHON=$(abspath $(VENV))/bin/python bash tests/fuzz.sh

test: test-py test-py37 test-wheel memcheck fuzz

demo: venv venv37
	$(VENV)/bin/python -m ibnedge --help

clean:
	rm -rf build $(VENV) $(VENV37) ibnedge/*.so
