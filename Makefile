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

.PHONY: sysdeps demo test test-slow test-py test-py37 test-wheel memcheck fuzz arm64 venv venv37 native clean

# System packages: libjpeg-turbo headers for the engine, cjpeg for test images (arithmetic
# coding, restart markers). Installed with apt-get when missing and we are root.
SYSDEPS_CHECK := dpkg -s libjpeg62-turbo-dev >/dev/null 2>&1 && command -v cjpeg >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1
sysdeps:
	@if ! { $(SYSDEPS_CHECK); }; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  if command -v apt-get >/dev/null && { [ -z "$$sudo" ] || command -v sudo >/dev/null; }; then \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjpeg62-turbo-dev libjpeg-turbo-progs g++; \
	  else \
	    echo "missing system packages: install libjpeg62-turbo-dev libjpeg-turbo-progs g++ (Debian/Ubuntu names)"; exit 2; \
	  fi; \
	fi
	@# ip (iproute2) puts the multi-node tests' nodes in network namespaces (as root); optional:
	@# without it they run over loopback and say so.
	@command -v ip >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; } || \
	  echo "no ip command (iproute2): the multi-node tests will run over loopback"

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
test-py: venv venv37  # cross-interpreter tests (Lite in 3.7 vs MindSpore in 3.11) need both
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

# The engine cross-built for aarch64 and run under qemu-user: byte-identical to x86, and the
# Python module under an aarch64 CPython (installs its own packages; sysroot cached in
# $$IBNEDGE_CROSS_CACHE, default ~/.cache/ibnedge-cross).
arm64: venv
	PYTHON=$(abspath $(VENV))/bin/python bash tests/arm64.sh

test: test-py test-py37 test-wheel memcheck fuzz arm64

# The main job, offline: a freshly initialised resnet50_ibn_a (throughput does not depend on
# the weights) exported to ONNX by train/, converted for MindSpore Lite, benchmarked stage by
# stage, then used to classify sample photographs. The official weights are tried first; where
# they cannot be downloaded, ibnedge says how to pass a model.
DEMO := runs/demo
DEMO_ONNX := $(DEMO)/resnet50_ibn_a.onnx
DEMO_LITE := $(DEMO)/resnet50_ibn_a_lite.mindir

$(DEMO_ONNX): | venv
	$(VENV)/bin/python -m train.export --arch resnet50_ibn_a --format ONNX --export-batch 0 --output $@

$(DEMO_LITE): $(DEMO_ONNX) | venv37
	$(VENV37)/bin/python -m ibnedge convert $< --to lite --output $@

demo: venv venv37 $(DEMO_LITE)
	@echo "== sample photographs"
	$(VENV37)/bin/python -m ibnedge.corpus imagenet $(DEMO)/photos --count 32 > /dev/null
	$(VENV37)/bin/python -m ibnedge.corpus bad $(DEMO)/photos/bad > /dev/null
	@echo "== ibnedge bench: preprocessing, Lite vs ONNX Runtime per batch size, end to end (2 threads)"
	$(VENV37)/bin/python -m ibnedge bench --model $(DEMO_LITE) --backend lite,onnx --threads 2 --batch 1,8 \
	  --images 32 --json $(DEMO)/bench.json
	@echo "== ibnedge infer with the default model (official ImageNet weights)"
	@$(VENV)/bin/python -m ibnedge infer $(DEMO)/photos --quiet --output $(DEMO)/predictions-official.csv \
	  && echo "wrote $(DEMO)/predictions-official.csv" || echo "(the official weights cannot be had here; continuing with the fresh model)"
	@echo "== ibnedge infer with the freshly initialised model on MindSpore Lite (its classes are not meaningful)"
	$(VENV37)/bin/python -m ibnedge infer $(DEMO)/photos --model $(DEMO_LITE) --backend lite --threads 2 --topk 3

clean:
	rm -rf build $(VENV) $(VENV37) ibnedge/*.so
