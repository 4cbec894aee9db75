"""The resize kernel's vector path (AVX2 here, NEON on aarch64: tests/arm64.sh) and its
portable scalar path give the same bytes: the same photos, odd sizes, padded crops and
flipped arrays, in every semantics, once in a child process with IBNEDGE_SIMD=off (the
kernel reads it once) and once without."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from edge_helpers import run_py

from ibnedge import _native

# Runs in the child: every semantics x (256 -> 224, 100 -> 128x90 padded) over the given
# files and a few arrays (white and a 0/255 checkerboard among them); saves the tensors
# and the kernel's name.
_CHILD = r"""
import sys
import numpy as np
from ibnedge import _native, corpus
from ibnedge.metadata import PreprocessSpec
from ibnedge.preprocess import Preprocessor
out, files = sys.argv[1], sys.argv[2:]
arrays = [corpus.photo(w, h, index=i) for i, (w, h) in enumerate([(4000, 33), (31, 17), (1023, 767), (257, 255)])]
y, x = np.mgrid[0:767, 0:1023]
extremes = [np.full((17, 31, 3), 255, np.uint8), (((x + y) % 2) * 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)]
items = files + arrays + [arrays[2][::-1, ::-2]] + extremes
tensors = {"kernel": np.array(_native.simd_path())}
for semantics in ("pil", "mindspore", "fast"):
    for resize, crop in ((256, 224), (100, (128, 90))):
        spec = PreprocessSpec(semantics=semantics, resize=resize, crop=crop)
        result = Preprocessor(spec, threads=2).run(items)
        assert not any(result.errors), result.errors
        tensors["%s-%d" % (semantics, resize)] = result.tensor
np.savez(out, **tensors)
"""


@pytest.mark.skipif(_native.simd_path() == "scalar", reason="this CPU has no vector path to compare")
def test_vector_and_scalar_kernels_give_the_same_bytes(imagenet_files, phone_files, tmp_path: Path):
    files = [str(p) for p in imagenet_files[:8] + phone_files[:1]]
    results = {}
    for name, env in (("vector", {}), ("scalar", {"IBNEDGE_SIMD": "off"})):
        out = tmp_path / ("%s.npz" % name)
        child = run_py(Path(sys.executable), ["-c", _CHILD, str(out)] + files, env=env)
        assert child.returncode == 0, child.stderr.decode()[-2000:]
        results[name] = dict(np.load(str(out)))
    assert str(results["vector"].pop("kernel")) == _native.simd_path()
    assert str(results["scalar"].pop("kernel")) == "scalar"
    assert sorted(results["vector"]) == sorted(results["scalar"])
    for key, tensor in results["vector"].items():
        assert tensor.tobytes() == results["scalar"][key].tobytes(), "%s differs between the kernels" % key
