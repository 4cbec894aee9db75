#!/usr/bin/env bash
# Memory check of the native engine: a plain CMake build of the C++ core with gcc's
# AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, and the driver
# cpp/tools/memcheck_driver.cpp running the batch API over the good and bad corpora
# (ibnedge.corpus) in all three semantics, at several thread counts. Any sanitizer
# report stops the run with a non-zero status.
#
#   bash tests/memcheck.sh            (from the repository root; PYTHON=.venv/bin/python by default)
#
# Needs cmake, a C++17 gcc and libjpeg62-turbo-dev; the corpora need Pillow and scikit-image.
set -euo pipefail
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
"$PYTHON" - "$list" <<'EOF' || fail "building the corpora with $PYTHON"
import sys
from ibnedge import corpus
import os
from pathlib import Path
# The tests' cache (tests/conftest.py): the corpora are built once for both.
root = Path(os.environ.get("IBNEDGE_CACHE") or ".cache") / "corpus"
rows = []
for p in corpus.imagenet_like(root)[:12]:
    rows.append(("ok", p))
rows.append(("ok", corpus.phone_like(root)[0]))
for case in corpus.bad_input_cases(root).values():
    if case.must_decode:
        # Non-JPEG formats are decoded by OpenCV on the Python side: the C++ core reports them
        # as not_jpeg, so only "an outcome" is required of them here.
        expect = "ok" if case.path.read_bytes()[:3] == b"\xff\xd8\xff" else "any"
    elif case.may_decode:
        expect = "any"
    else:
        expect = "error"
    rows.append((expect, case.path))
with open(sys.argv[1], "w") as f:
    for expect, path in rows:
        f.write("%s\t%s\n" % (expect, path))
print("memcheck: %d files" % len(rows))
EOF

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
echo "memcheck: OK: no sanitizer reports (ASan + UBSan + LSan), every corpus item handled as expected"
