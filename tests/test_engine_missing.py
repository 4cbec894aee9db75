"""When the compiled engine does not load (here: the system's libjpeg-turbo, which it links,
is unreadable, as on a box where libjpeg62-turbo was never installed), ``ibnedge infer``
says so in one line with the fix, and ``ibnedge doctor`` reports the same reason.

The library is hidden for real: the child runs in a private mount namespace (root only;
elsewhere these tests skip) where /dev/null is bind-mounted over it, so the dynamic loader
refuses it when ``ibnedge._native`` is imported. Without root, one test blocks the import
itself (``sys.modules["ibnedge._native"] = None``, Python's own way to make an import fail).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from edge_helpers import make_tiny_onnx, run_in_mount_namespace, run_py

from ibnedge import _native

PY = Path(sys.executable)


def _linked_libjpeg() -> str:
    """The libjpeg file the engine (imported above) was loaded with, from this process's
    mappings (Pillow's bundled copy is named libjpeg-<hash>.so)."""
    assert _native.jpeg_library()["turbo_version"]
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/libjpeg.so" in line}
    if len(paths) != 1:
        pytest.skip("the engine does not load libjpeg as one shared library here (%r)" % sorted(paths))
    return os.path.realpath(paths.pop())


def _without_libjpeg(argv: List[str]) -> subprocess.CompletedProcess:
    return run_in_mount_namespace('mount --bind /dev/null "$IBNEDGE_TEST_HIDE"', argv,
                                  {"IBNEDGE_TEST_HIDE": _linked_libjpeg()})


def test_infer_without_a_loadable_engine_says_why_and_how_to_fix_it_in_one_line(tmp_path):
    model = make_tiny_onnx(tmp_path / "net.onnx")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff")  # never read: the engine is loaded first
    proc = _without_libjpeg([str(PY), "-m", "ibnedge", "infer", str(photo), "--model", str(model),
                             "--backend", "onnx"])
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("ibnedge infer: error: the native engine (ibnedge._native) does not load: ")
    assert "libjpeg.so.62: file too short" in line
    assert line.endswith("reinstall ibnedge (pip install ., or make native in a checkout); it needs the system "
                         "libjpeg-turbo (apt-get install libjpeg62-turbo)")


def test_doctor_reports_the_same_reason_as_a_problem():
    proc = _without_libjpeg([str(PY), "-m", "ibnedge", "doctor"])
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    (line,) = [ln for ln in out.splitlines() if "native engine does not load" in ln]
    assert line.split()[0] == "problem" and "libjpeg.so.62: file too short)" in line
    assert line.endswith("-- fix: reinstall ibnedge (pip install ., or make native in a checkout); it needs the "
                         "system libjpeg-turbo (apt-get install libjpeg62-turbo)")


_BLOCKED = ("import sys; sys.modules['ibnedge._native'] = None; from ibnedge.cli import main; "
            "sys.exit(main(sys.argv[1:]))")


def test_infer_with_the_engine_import_blocked_fails_in_one_line(tmp_path):
    """The same path as above wherever a mount namespace is not to be had (not root)."""
    model = make_tiny_onnx(tmp_path / "net.onnx")
    proc = run_py(PY, ["-c", _BLOCKED, "infer", str(tmp_path / "photo.jpg"), "--model", str(model),
                       "--backend", "onnx"])
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("ibnedge infer: error: the native engine (ibnedge._native) does not load: ")
    assert line.endswith("libjpeg-turbo (apt-get install libjpeg62-turbo)")
