#!/usr/bin/env bash
# The engine on ARM64 (aarch64, the CPU of the Ascend 310 boxes), checked from an x86 machine:
# cross-built with Debian's g++-aarch64-linux-gnu and run under qemu-user.
#
# 1. C++: the core and its drivers for aarch64 (NEON kernels) and for the host (AVX2 where
#    the CPU has it). The memcheck driver's corpus under qemu (every outcome as expected,
#    thread counts, bytes vs paths, decode window), then tensor dumps of real photographs in
#    every semantics at 1 and 2 threads: x86 AVX2, x86 scalar, aarch64 NEON and aarch64
#    scalar (IBNEDGE_SIMD=off) must be byte-identical, and the statuses of the bad-input
#    corpus identical too.
# 2. Python: the pybind11 module built for aarch64 against Debian's arm64 CPython 3.11,
#    imported by that interpreter under qemu with numpy's manylinux aarch64 wheel, running
#    tests/aarch64/engine_on_aarch64.py (imports, parity with Pillow and with the x86 engine, bad inputs).
#    ARM64_PYTHON=0 skips it.
#
#   bash tests/arm64.sh          (from the repository root; PYTHON=.venv/bin/python by default)
#   bash tests/arm64.sh setup    (packages, sysroot and builds only: ibnedge.bench.insn uses it)
#
# Installs what it needs (apt-get, as root or through sudo): the cross compiler, qemu-user,
# the arm64 libjpeg-turbo. The arm64 sysroot (Debian's python3.11 packages unpacked, numpy
# and pytest wheels, djpeg) is cached outside the checkout in $IBNEDGE_CROSS_CACHE
# (default ~/.cache/ibnedge-cross). PYTHON's environment needs pybind11, numpy, Pillow,
# scikit-image (the corpora) and pip.
set -euo pipefail
export IBNEDGE_HOME="${IBNEDGE_HOME:-$PWD/.cache}"
cd "$(dirname "$0")/.."

MODE=${1:-test}
PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${IBNEDGE_CROSS_CACHE:-$HOME/.cache/ibnedge-cross}
BUILD=$(realpath -m "${ARM64_BUILD:-build/arm64}")
JOBS=${JOBS:-$(nproc)}
NUMPY_VERSION=1.26.4

fail() { echo "arm64: FAILED: $*" >&2; exit 1; }
step() { echo "arm64: $* (${SECONDS}s)"; }

# ------------------------------------------------------------------ packages
CROSS_PACKAGES=(g++-aarch64-linux-gnu qemu-user libjpeg62-turbo-dev:arm64)
if ! dpkg -s "${CROSS_PACKAGES[@]}" >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || fail "needs apt-get (Debian/Ubuntu) for ${CROSS_PACKAGES[*]}"
  step "installing ${CROSS_PACKAGES[*]}"
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${CROSS_PACKAGES[@]}" >/dev/null
fi

# The arm64 loader and libc are the multiarch ones (libc6:arm64, /lib/ld-linux-aarch64.so.1),
# so they come first; the cross toolchain's directory only adds libstdc++/libgcc_s. (Its own
# libc.so.6 ahead of them hangs every pthread_create.)
SYSROOT="$CACHE/sysroot"
TARGET_LIBS="/usr/lib/aarch64-linux-gnu:/usr/aarch64-linux-gnu/lib"
SYSROOT_LIBS="$SYSROOT/usr/lib/aarch64-linux-gnu:$SYSROOT/lib/aarch64-linux-gnu"
unset QEMU_LD_PREFIX  # no -L path redirection: see above
qemu_run() { qemu-aarch64 -E "LD_LIBRARY_PATH=$SYSROOT_LIBS:$TARGET_LIBS" "$@"; }

# ------------------------------------------------------------------ sysroot (cached)
# Debian's arm64 CPython and the libraries its modules load, unpacked (installing them would
# replace the host's amd64 python3.11), djpeg for the benchmark, numpy and pytest wheels.
SYSROOT_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libpython3.11 libpython3.11-dev
  libexpat1 zlib1g libbz2-1.0 libcrypt1 libdb5.3 libffi8 liblzma5 libncursesw6 libnsl2 libreadline8
  libsqlite3-0 libtinfo6 libtirpc3 libuuid1 libssl3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libcom-err2 libkeyutils1 libjpeg-turbo-progs libturbojpeg0)
sysroot_key=$(echo "v1 ${SYSROOT_DEBS[*]} numpy==$NUMPY_VERSION pytest" | sha256sum | cut -c1-16)
if [ "$(cat "$SYSROOT/.stamp" 2>/dev/null)" != "$sysroot_key" ]; then
  step "building the arm64 sysroot in $SYSROOT"
  rm -rf "$SYSROOT" "$CACHE/debs" && mkdir -p "$SYSROOT" "$CACHE/debs"
  (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "${SYSROOT_DEBS[@]/%/:arm64}") || fail "apt-get download of the arm64 packages"
  for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  "$PYTHON" -m pip install -q --target "$SYSROOT/site-packages" --platform manylinux2014_aarch64 \
    --implementation cp --python-version 3.11 --only-binary=:all: "numpy==$NUMPY_VERSION" pytest \
    >"$CACHE/pip.log" 2>&1 || { cat "$CACHE/pip.log" >&2; fail "pip download of numpy's aarch64 wheel and pytest"; }
  rm -rf "$CACHE/debs"
  echo "$sysroot_key" >"$SYSROOT/.stamp"
fi
PY_AARCH64=(qemu_run -E "PYTHONHOME=$SYSROOT/usr" "$SYSROOT/usr/bin/python3.11")

# ------------------------------------------------------------------ builds
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
configure() {  # build dir, extra cmake arguments...
  local dir=$1; shift
  mkdir -p "$dir"
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir/configure.log" 2>&1 \
    || { cat "$dir/configure.log" >&2; fail "cmake configure of $dir (log above)"; }
}
step "building the core and drivers for x86 and aarch64"
configure "$BUILD/x86" -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_TOOLS=ON
configure "$BUILD/aarch64" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_TOOLS=ON
cmake --build "$BUILD/x86" --target tensor_dump -j "$JOBS" >/dev/null || fail "x86 build"
cmake --build "$BUILD/aarch64" -j "$JOBS" 2>&1 | tee "$BUILD/aarch64/build.log" | grep -iE "warning|error" && \
  fail "the aarch64 build printed warnings or errors ($BUILD/aarch64/build.log)"
[ -x "$BUILD/aarch64/memcheck_driver" ] || fail "aarch64 build ($BUILD/aarch64/build.log)"

if [ "${ARM64_PYTHON:-1}" != "0" ] || [ "$MODE" = setup ]; then
  pybind11_dir=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())") || fail "pybind11 missing in $PYTHON"
  host_python=$("$PYTHON" -c "import sys; print(sys.executable)")
  # Headers from the sysroot (pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>),
  # the module suffix of the aarch64 interpreter; the host's Python only answers CMake.
  configure "$BUILD/python" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DIBNEDGE_AARCH64_SYSROOT="$SYSROOT" -DPython_EXECUTABLE="$host_python" -Dpybind11_DIR="$pybind11_dir" \
    -DPython_INCLUDE_DIR="$SYSROOT/usr/include/python3.11" -DCMAKE_CXX_FLAGS="-isystem $SYSROOT/usr/include" \
    -DPYTHON_MODULE_EXTENSION=.cpython-311-aarch64-linux-gnu.so
  cmake --build "$BUILD/python" --target _native -j "$JOBS" >"$BUILD/python/build.log" 2>&1 \
    || { tail -30 "$BUILD/python/build.log" >&2; fail "aarch64 build of the Python module"; }
fi
[ "$MODE" = setup ] && { step "setup done"; exit 0; }

# ------------------------------------------------------------------ corpora
lists="$BUILD/lists"
mkdir -p "$lists"
"$PYTHON" - "$lists" <<'EOF' || fail "building the corpora with $PYTHON"
import sys
from pathlib import Path
from ibnedge import corpus
out = Path(sys.argv[1])
root = corpus.default_cache_dir()
photos = corpus.imagenet_like(root) + corpus.phone_like(root)[:1]
out.joinpath("photos.txt").write_text("".join("%s\n" % p for p in photos))
cases = corpus.bad_input_cases(root).values()
out.joinpath("bad.txt").write_text("".join("%s\n" % c.path for c in cases))
print("arm64: %d photos, %d bad inputs" % (len(photos), len(cases)))
EOF
"$PYTHON" tests/memcheck_corpus.py "$lists/memcheck.txt" >/dev/null || fail "the memcheck list"

# ------------------------------------------------------------------ 1. C++ under qemu
step "memcheck driver under qemu-aarch64"
qemu_run "$BUILD/aarch64/memcheck_driver" "$lists/memcheck.txt" >"$BUILD/memcheck.log" 2>&1 \
  || { cat "$BUILD/memcheck.log" >&2; fail "memcheck_driver on aarch64"; }
tail -1 "$BUILD/memcheck.log"

step "tensor dumps: x86 AVX2, x86 scalar, aarch64 NEON, aarch64 scalar"
dumps="$BUILD/dumps"
rm -rf "$dumps" && mkdir -p "$dumps"/{x86-simd,x86-scalar,aarch64-simd,aarch64-scalar}
for list in photos bad; do
  for build in x86-simd x86-scalar aarch64-simd aarch64-scalar; do
    mkdir -p "$dumps/$build/$list"
    case $build in
      x86-simd) run=(env "$BUILD/x86/tensor_dump") ;;
      x86-scalar) run=(env IBNEDGE_SIMD=off "$BUILD/x86/tensor_dump") ;;
      aarch64-simd) run=(qemu_run "$BUILD/aarch64/tensor_dump") ;;
      aarch64-scalar) run=(qemu_run -E IBNEDGE_SIMD=off "$BUILD/aarch64/tensor_dump") ;;
    esac
    "${run[@]}" --threads 1,2 "$lists/$list.txt" "$dumps/$build/$list" >"$dumps/$build/$list.log" 2>&1 \
      || { cat "$dumps/$build/$list.log" >&2; fail "tensor_dump ($build, $list)"; }
  done
done
head -1 "$dumps"/*/photos.log
grep -q "kernel avx2" "$dumps/x86-simd/photos.log" || echo "arm64: note: this x86 CPU has no AVX2; its 'simd' dump is the scalar path"
grep -q "kernel neon" "$dumps/aarch64-simd/photos.log" || fail "the aarch64 build did not use its NEON kernels"
for build in x86-scalar aarch64-simd aarch64-scalar; do
  for semantics in pil mindspore fast; do
    cmp "$dumps/x86-simd/photos/$semantics.status" "$dumps/$build/photos/$semantics.status" \
      || fail "$build: photo statuses ($semantics) differ from x86's"
    cmp "$dumps/x86-simd/photos/$semantics.f32" "$dumps/$build/photos/$semantics.f32" \
      || fail "$build: $semantics tensors differ from x86 AVX2's"
    # Bad inputs: statuses only (libjpeg-turbo's NEON, AVX2 and C IDCTs decode corrupt
    # coefficients differently; valid files are identical).
    cmp "$dumps/x86-simd/bad/$semantics.status" "$dumps/$build/bad/$semantics.status" \
      || fail "$build: bad-input statuses ($semantics) differ from x86's"
  done
done
echo "arm64: C++ stage OK: x86 AVX2 = x86 scalar = aarch64 NEON = aarch64 scalar, byte for byte"

# ------------------------------------------------------------------ 2. Python under qemu
if [ "${ARM64_PYTHON:-1}" != "0" ]; then
  step "the Python module on aarch64 CPython under qemu"
  expected="$BUILD/expected"
  rm -rf "$expected" && mkdir -p "$expected"
  "$PYTHON" tests/aarch64/make_expected.py "$expected" || fail "x86 expectations for tests/aarch64"
  # A copy of the package with the aarch64 module (the checkout's own ibnedge/ holds the x86 one).
  overlay="$BUILD/overlay"
  rm -rf "$overlay" && mkdir -p "$overlay"
  cp -r ibnedge "$overlay/"
  find "$overlay" \( -name __pycache__ -o -name "_native*.so" \) -prune -exec rm -rf {} +
  cp "$BUILD"/python/_native*.so "$overlay/ibnedge/"
  "${PY_AARCH64[@]}" -c "import platform; assert platform.machine() == 'aarch64', platform.machine()" \
    || fail "the aarch64 interpreter does not start under qemu"
  qemu_run -E "PYTHONHOME=$SYSROOT/usr" -E "PYTHONPATH=$overlay:$SYSROOT/site-packages" \
    -E "IBNEDGE_AARCH64_EXPECTED=$expected" -E "IBNEDGE_HOME=$IBNEDGE_HOME" \
    "$SYSROOT/usr/bin/python3.11" -P -m pytest -q -p no:cacheprovider tests/aarch64/engine_on_aarch64.py \
    || fail "tests/aarch64 under qemu-aarch64"
fi
echo "arm64: OK (${SECONDS}s)"
