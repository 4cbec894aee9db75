"""What the native engine says about itself: the resize kernel's SIMD path and the
libjpeg-turbo it was built against (``ibnedge doctor`` reports both)."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from edge_helpers import run_py

PY = Path(sys.executable)


def test_native_engine_reports_its_simd_path_and_libjpeg_turbo():
    from ibnedge import _native

    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expected = {"x86_64": "avx2" if re.search(r"\bavx2\b", cpu_flags) else "scalar"}.get(platform.machine())
    assert _native.simd_path() in ("avx2", "neon", "scalar")
    if expected and os.environ.get("IBNEDGE_SIMD") != "off":
        assert _native.simd_path() == expected
    info = _native.jpeg_library()
    assert info["partial_decode"] is True and info["api_version"] in (62, 70, 80)
    if shutil.which("cjpeg"):  # libjpeg-turbo-progs: the same library's own version line
        banner = subprocess.run(["cjpeg", "-version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
        assert "libjpeg-turbo version %s " % info["turbo_version"] in banner


def test_simd_off_forces_the_scalar_path():
    proc = run_py(PY, ["-c", "import ibnedge._native as n; print(n.simd_path())"], env={"IBNEDGE_SIMD": "off"})
    assert proc.stdout.decode().strip() == "scalar", proc.stderr.decode()


def test_the_module_exports_none_of_the_engines_symbols():
    """Only the module's entry point is exported: with the engine's C++ names visible, two
    builds loaded into one process bound to each other's code (an A/B measured one build's
    speed with the other's kernels)."""
    from ibnedge import _native

    if not shutil.which("nm"):
        import pytest

        pytest.skip("nm (binutils) is not installed")
    listing = subprocess.run(["nm", "-D", "--defined-only", _native.__file__], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=True).stdout.decode()
    engine = [line for line in listing.splitlines() if "7ibnedge" in line]  # mangled namespace ibnedge
    assert not engine, "%d engine symbols exported, e.g. %s" % (len(engine), engine[:3])
    assert re.search(r"\bPyInit__native$", listing, re.M), listing
