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
