#!/usr/bin/env bash
# Memory checks of the native engine with gcc's AddressSanitizer + UndefinedBehaviorSanitizer
# (+ LeakSanitizer for the C++ stage). Any sanitizer report fails the run.
#
# 1. C++: a plain CMake build of the core (IBNEDGE_CORE_ONLY, IBNEDGE_TOOLS, IBNEDGE_SANITIZE)
#    and the driver cpp/tools/memcheck_driver.cpp running the batch API over the good and bad
#    corpora (ibnedge.corpus) in all three semantics, at several thread counts, from paths,
#    bytes and pixel arrays, with leak detection; then cpp/tools/fork_check.cpp (from a build
#    without sanitizers, see below): children forked while other threads are inside
#    Engine::run must run batches and exit.
# 2. Python: the pybind11 module built with the same sanitizers, loaded (LD_PRELOAD of
#    libasan) in place of the installed one, running the parity, bad-input and thread tests
#    (bindings, GIL release, OpenCV fallback, per-item errors), every semantics included. Only
#    tests that need the MindSpore reference skip (IBNEDGE_TEST_NO_MINDSPORE, tests/conftest.py):
#    ASan's exception interceptor aborts inside MindSpore's own library.
#    Leak detection is off in this stage (the interpreter itself never frees everything);
#    stage 1 covers leaks. MEMCHECK_PYTHON=0 skips it.
#
#   bash tests/memcheck.sh            (from the repository root; PYTHON=.venv/bin/python by default)
#
# Needs cmake, a C++17 gcc and libjpeg62-turbo-dev; the corpora need Pillow and scikit-image;
# stage 2 needs pybind11 and pytest in PYTHON's environment.
set -euo pipefail
# The corpora are built once for these scripts and the tests (tests/conftest.py corpus_dir).
export IBNEDGE_HOME="${IBNEDGE_HOME:-$PWD/.cache}"
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
BUILD=${MEMCHECK_BUILD:-build/memcheck}
JOBS=${JOBS:-$(nproc)}

fail() { echo "memcheck: FAILED: $*" >&2; exit 1; }

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "IBNEDGE_SANITIZE:BOOL=ON" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_TOOLS=ON -DIBNEDGE_SANITIZE=ON >"$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log" >&2; fail "cmake configure (log above)"; }
cmake --build "$BUILD" --target memcheck_driver -j "$JOBS" || fail "build of memcheck_driver"

# The corpora: paths one per line, with the outcome each must have (ok / error / any).
list="$BUILD/corpus.txt"
"$PYTHON" tests/memcheck_corpus.py "$list" || fail "building the corpora with $PYTHON"

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
export LSAN_OPTIONS="exitcode=88"

log="$BUILD/memcheck.log"
set +e
"$BUILD/memcheck_driver" "$list" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"; then
  fail "sanitizer report in $log"
fi
[ "$status" -eq 0 ] || fail "memcheck_driver exited with status $status (log: $log)"
# fork_check runs from a build without sanitizers: gcc 12's ASan allocator is not fork-safe
# (a child forked while another thread holds one of its size-class mutexes inherits it
# taken, and the child's own workers then block in operator new for good: 1-2 hung children
# in 250 forks, stacks in __sanitizer::SizeClassAllocator64::GetFromAllocator), while
# glibc's malloc takes its locks around fork(). The check is about the engine's own locks.
PLAIN="$BUILD-plain"
mkdir -p "$PLAIN"
cmake -S . -B "$PLAIN" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_TOOLS=ON -DIBNEDGE_SANITIZE=OFF >"$PLAIN/configure.log" 2>&1 \
  || { cat "$PLAIN/configure.log" >&2; fail "cmake configure of $PLAIN (log above)"; }
cmake --build "$PLAIN" --target fork_check -j "$JOBS" || fail "build of fork_check"
set +e
"$PLAIN/fork_check" 200 2>&1 | tee "$PLAIN/fork_check.log"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || fail "fork_check exited with status $status (a forked child hung or failed: $PLAIN/fork_check.log)"
echo "memcheck: C++ stage clean"

if [ "${MEMCHECK_PYTHON:-1}" != "0" ]; then
  PYBUILD="$BUILD-python"
  if [ -f "$PYBUILD/CMakeCache.txt" ] && ! grep -q "IBNEDGE_SANITIZE:BOOL=ON" "$PYBUILD/CMakeCache.txt"; then
    rm -rf "$PYBUILD"
  fi
  mkdir -p "$PYBUILD"
  py_abs=$("$PYTHON" -c "import sys; print(sys.executable)")
  pybind11_dir=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())") || fail "pybind11 missing in $PYTHON"
  cmake -S . -B "$PYBUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIBNEDGE_SANITIZE=ON \
    -DPython_EXECUTABLE="$py_abs" -Dpybind11_DIR="$pybind11_dir" >"$PYBUILD/configure.log" 2>&1 \
    || { cat "$PYBUILD/configure.log" >&2; fail "cmake configure of the sanitized module (log above)"; }
  cmake --build "$PYBUILD" --target _native -j "$JOBS" || fail "build of the sanitized _native module"
  # A copy of the package with the sanitized module, imported ahead of the installed one.
  overlay="$PWD/$PYBUILD/overlay"
  rm -rf "$overlay"; mkdir -p "$overlay"
  cp -r ibnedge "$overlay/"
  find "$overlay" -name __pycache__ -prune -exec rm -rf {} +
  rm -f "$overlay"/ibnedge/_native*.so
  cp "$PYBUILD"/_native*.so "$overlay/ibnedge/"
  # The editable install's finder would import the installed module: drop it, put the copy first.
  runner='import sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
sys.path.insert(0, sys.argv[1])
import ibnedge._native
if not ibnedge._native.__file__.startswith(sys.argv[1]):
    sys.exit("memcheck: imported %s, not the sanitized module" % ibnedge._native.__file__)
import pytest
sys.exit(pytest.main(sys.argv[2:]))'
  logs="$PWD/$PYBUILD/sanitizer-logs"
  rm -rf "$logs"; mkdir -p "$logs"
  set +e
  # libstdc++ is preloaded too: ASan finds the real __cxa_throw when it starts, and the
  # interpreter does not link libstdc++, so without it the first C++ throw (a binding's
  # ValueError, an engine-internal too_large) aborts with "real___cxa_throw != 0".
  IBNEDGE_TEST_NO_MINDSPORE=1 LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86:log_path=$logs/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$logs/ubsan" \
    "$PYTHON" -c "$runner" "$overlay" tests/test_native_parity.py tests/test_native_bad_inputs.py \
    tests/test_native_threads.py -q -p no:cacheprovider
  status=$?
  set -e
  if compgen -G "$logs/*" >/dev/null; then
    cat "$logs"/* >&2
    fail "sanitizer report from the Python tests (above; logs in $logs)"
  fi
  [ "$status" -eq 0 ] || fail "the Python tests under the sanitizers exited with status $status"
  echo "memcheck: Python stage clean"
fi
echo "memcheck: OK: no sanitizer reports (ASan + UBSan + LSan), every corpus item handled as expected"
