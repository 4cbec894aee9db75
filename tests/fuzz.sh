#!/usr/bin/env bash
# Coverage-guided fuzzing of the engine's decode + resize entry point on arbitrary bytes
# (cpp/fuzz/fuzz_decode.cpp: every semantics, small crops) with clang's libFuzzer under
# ASan + UBSan, seeded from the ibnedge.corpus files, for a bounded time.
#
#   FUZZ_SECONDS=60 bash tests/fuzz.sh    (from the repository root; PYTHON=.venv/bin/python by default)
#
# Installs clang and the libFuzzer runtime with apt-get when they are missing (Debian 12:
# clang-14, libclang-rt-14-dev). Fails on any crash, leak, sanitizer report or timeout;
# the offending input is kept under build/fuzz/artifacts/.
set -euo pipefail
# The corpora are built once for these scripts and the tests (tests/conftest.py corpus_dir).
export IBNEDGE_HOME="${IBNEDGE_HOME:-$PWD/.cache}"
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD=${FUZZ_BUILD:-build/fuzz}
JOBS=${JOBS:-$(nproc)}

fail() { echo "fuzz: FAILED: $*" >&2; exit 1; }

have_libfuzzer() {
  command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1 || return 1
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    > /tmp/ibnedge-fuzz-probe.cpp
  clang++ -fsanitize=fuzzer /tmp/ibnedge-fuzz-probe.cpp -o /tmp/ibnedge-fuzz-probe >/dev/null 2>&1
}

if ! have_libfuzzer; then
  echo "fuzz: installing clang + libFuzzer (apt-get)"
  command -v apt-get >/dev/null 2>&1 || fail "clang with libFuzzer is missing and apt-get is not available"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  # Debian 12 (bookworm) ships clang 14; the libFuzzer runtime is in libclang-rt-14-dev.
  rt=$(apt-cache search --names-only '^libclang-rt-[0-9]+-dev$' | awk '{print $1}' | sort -V | tail -n 1)
  ver=${rt#libclang-rt-}; ver=${ver%-dev}
  if [ -n "$ver" ] && apt-cache show "clang-$ver" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "clang-$ver" "$rt" >/dev/null
    if ! command -v clang >/dev/null 2>&1; then
      mkdir -p "$BUILD/bin"; ln -sf "$(command -v clang-"$ver")" "$BUILD/bin/clang"
      ln -sf "$(command -v clang++-"$ver")" "$BUILD/bin/clang++"; export PATH="$PWD/$BUILD/bin:$PATH"
    fi
  else
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
  fi
  have_libfuzzer || fail "clang was installed but cannot link -fsanitize=fuzzer"
fi

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
mkdir -p "$BUILD"
CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_FUZZ=ON >"$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log" >&2; fail "cmake configure (log above)"; }
cmake --build "$BUILD" --target fuzz_decode -j "$JOBS" || fail "build of fuzz_decode"

# Seeds: every flavour of the bad-input corpus (small files) plus tiny variants.
seeds="$BUILD/seeds"
rm -rf "$seeds"; mkdir -p "$seeds" "$BUILD/corpus" "$BUILD/artifacts"
"$PYTHON" - "$seeds" <<'EOF' || fail "building the seed corpus with $PYTHON"
import shutil, sys
from pathlib import Path
from ibnedge import corpus
out = Path(sys.argv[1])
n = 0
root = corpus.default_cache_dir()  # $IBNEDGE_HOME/corpus (exported above), as the tests'
for case in corpus.bad_input_cases(root).values():
    if case.path.is_file() and case.path.stat().st_size <= 65536:
        shutil.copyfile(str(case.path), str(out / case.path.name)); n += 1
for i, (w, h) in enumerate([(64, 48), (48, 64), (17, 9), (300, 20), (1, 1)]):
    pixels = corpus.photo(w, h, index=i)
    for name, opts in [("q90", {}), ("prog", {"progressive": True}), ("444", {"subsampling": 0})]:
        (out / ("tiny_%dx%d_%s.jpg" % (w, h, name))).write_bytes(corpus.encode_jpeg(pixels, quality=90, **opts)); n += 1
print("fuzz: %d seed files" % n)
EOF

log="$BUILD/fuzz.log"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
set +e
"$BUILD/fuzz_decode" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/" "$BUILD/corpus" "$seeds" >"$log" 2>&1
status=$?
set -e
tail -n 25 "$log"
if [ "$status" -ne 0 ] || grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: " "$log"; then
  fail "libFuzzer status $status; crashing input in $BUILD/artifacts/ (log: $log)"
fi
runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
echo "fuzz: OK: ${FUZZ_SECONDS}s, $runs inputs, no crash, leak or sanitizer report"
