"""The Python module built for aarch64, under an aarch64 CPython (tests/arm64.sh): it imports,
runs its NEON kernels, gives the x86 engine's tensors byte for byte, matches Pillow, and
handles bad inputs and bad arguments as on x86.

Not a test_*.py file: the default (x86) run does not collect it; tests/arm64.sh names it,
with the x86 expectations of make_expected.py in $IBNEDGE_AARCH64_EXPECTED.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from conftest import max_abs_diff, run_pixels, with_views

from ibnedge import _native
from ibnedge.metadata import PreprocessSpec
from ibnedge.preprocess import Preprocessor

EXPECTED_ENV = "IBNEDGE_AARCH64_EXPECTED"


@pytest.fixture(scope="module")
def expected_dir() -> Path:
    if not os.environ.get(EXPECTED_ENV):
        raise pytest.UsageError("set %s to the output of tests/aarch64/make_expected.py (tests/arm64.sh does)"
                                % EXPECTED_ENV)
    return Path(os.environ[EXPECTED_ENV])


@pytest.fixture(scope="module")
def manifest(expected_dir: Path) -> Dict[str, Any]:
    return json.loads((expected_dir / "manifest.json").read_text())


def test_the_aarch64_module_with_its_neon_kernels():
    assert platform.machine() == "aarch64"
    assert _native.__file__.endswith(".cpython-311-aarch64-linux-gnu.so")
    assert _native.simd_path() == "neon"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("semantics", ["pil", "mindspore", "fast"])
def test_tensors_are_byte_identical_to_x86(semantics: str, threads: int, manifest: Dict[str, Any],
                                           expected_dir: Path):
    x86 = np.load(str(expected_dir / ("%s.npy" % semantics)))
    result = Preprocessor(PreprocessSpec(semantics=semantics), threads=threads).run(manifest["photos"])
    assert result.errors == [None] * len(manifest["photos"])
    assert result.tensor.tobytes() == x86.tobytes()


@pytest.mark.parametrize("semantics", ["pil", "mindspore", "fast"])
def test_pixel_arrays_give_the_x86_tensors_byte_for_byte(semantics: str, expected_dir: Path):
    """Arrays take their own paths into the kernel (packed RGB widened to RGBX by vld3/vst4,
    RGBA and its 3-channel view copied): odd widths below and past the 16-pixel step, rows of
    ~1300 copied pixels."""
    with np.load(str(expected_dir / "arrays.npz")) as saved:
        arrays = [saved["arr_%d" % i] for i in range(len(saved.files))]
    items = with_views(arrays)
    x86 = np.load(str(expected_dir / ("arrays-%s.npy" % semantics)))
    result = Preprocessor(PreprocessSpec(semantics=semantics), threads=2).run(items)
    assert result.errors == [None] * len(items)
    assert result.tensor.tobytes() == x86.tobytes()


def test_pil_matches_pillow(manifest: Dict[str, Any], expected_dir: Path):
    pillow = np.load(str(expected_dir / "pillow.npy"))
    rows, errors = run_pixels(manifest["photos"], "pil")
    assert errors == [None] * len(rows)
    assert max(max_abs_diff(row, ref) for row, ref in zip(rows, pillow)) <= 1


def test_bytes_and_arrays_give_the_path_result(manifest: Dict[str, Any]):
    paths = manifest["photos"][:3]
    data = [Path(p).read_bytes() for p in paths]
    from_paths, _ = run_pixels(paths, "mindspore")
    from_bytes, errors = run_pixels(data, "mindspore", threads=2)
    assert errors == [None] * 3
    assert all(np.array_equal(a, b) for a, b in zip(from_paths, from_bytes))
    array = np.ascontiguousarray(from_paths[0])  # a decoded-pixel input (224x224 -> 256 -> 224)
    rows, errors = run_pixels([array, array[::-1, ::-1]], "pil")
    assert errors == [None, None]
    assert max_abs_diff(rows[1][::-1, ::-1], rows[0]) <= 1


def test_bad_inputs_fail_as_on_x86_and_spare_the_batch(manifest: Dict[str, Any]):
    bad = manifest["bad"]
    photo = manifest["photos"][0]
    items = [photo] + [case["path"] for case in bad] + [photo]
    result = Preprocessor(PreprocessSpec(semantics="pil"), threads=2).run(items)
    kinds = [e.kind if e else None for e in result.errors]
    assert kinds == [None] + [case["kind"] for case in bad] + [None]
    assert result.tensor[0].tobytes() == result.tensor[-1].tobytes()
    for i, error in enumerate(result.errors):
        if error is not None:
            assert Path(items[i]).name in error.message or "item %d" % i in error.message, error.message
            assert not result.tensor[i].any(), "failed item %d is not zero-filled" % i


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="threads"):
        Preprocessor(threads=-1)
    pre = Preprocessor(PreprocessSpec(semantics="pil"), threads=1)
    with pytest.raises(ValueError, match="out must be"):
        pre.run([b"\xff\xd8\xff"], out=np.empty((2, 3, 224, 224), np.float32))
