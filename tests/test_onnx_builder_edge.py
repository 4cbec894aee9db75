"""The edge box's route for official weights: ``.pth`` -> ONNX (``ibnedge.onnx_builder``) ->
MindSpore Lite (``ibnedge convert``), with neither PyTorch nor MindSpore.

Runs in both interpreters; the Lite checks need Python 3.7's ``mindspore_lite``. The
``.pth`` files come from the tests' torch-free writer (``pth_writer``), whose output
``test_onnx_builder`` reads back with ``torch.load``. Lite must give ONNX Runtime's logits
on the same graph within 1e-5 relative (max |diff| / max |logit|).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the builder writes graphs with the onnx package")
ort = pytest.importorskip("onnxruntime")

from edge_helpers import run_py  # noqa: E402
from ibnedge import architectures  # noqa: E402
from ibnedge.backends import create_backend  # noqa: E402
from ibnedge.convert import convert_to_lite  # noqa: E402
from ibnedge.metadata import load_for_model  # noqa: E402
from ibnedge.onnx_builder import build_from_pth  # noqa: E402
from pth_writer import random_state_dict, save_pth  # noqa: E402
from train_helpers import relative_error  # noqa: E402

LITE_TOL = 1e-5
FAST = ["resnet_ibn_a_tiny", "resnet18_ibn_b"]  # IBN-a, IBN-b; every variant with -m slow


def test_builder_needs_neither_torch_nor_mindspore_nor_train(tmp_path):
    """A fresh interpreter builds a model from a .pth (architecture inferred) and has imported
    no module of torch, MindSpore or the training package on the way."""
    pth = save_pth(random_state_dict("resnet_ibn_a_tiny", num_classes=10), tmp_path / "tiny.pth")
    probe = (
        "import sys\n"
        "from ibnedge.onnx_builder import build_from_pth\n"
        "built = build_from_pth(sys.argv[1])\n"
        "print('ARCH', built.metadata.arch, built.metadata.num_classes)\n"
        "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mindspore', 'train')))\n"
    )
    out = run_py(Path(sys.executable), ["-c", probe, str(pth)], timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    stdout = out.stdout.decode()
    assert "ARCH resnet_ibn_a_tiny 10" in stdout and "IMPORTED []" in stdout, stdout
    assert (tmp_path / "tiny.onnx").is_file() and (tmp_path / "tiny.json").is_file()


def _lite_against_onnx_runtime(name: str, tmp_path: Path, size) -> float:
    pytest.importorskip("mindspore_lite", reason="MindSpore Lite 2.0 is on PyPI for CPython 3.7 only")
    pth = save_pth(random_state_dict(name, num_classes=10, seed=1), tmp_path / (name + ".pth"))
    built = build_from_pth(pth, input_size=size)
    lite_path = convert_to_lite(built.path)
    assert load_for_model(lite_path) == built.metadata  # carried beside the Lite model
    x = np.random.default_rng(2).standard_normal((3, 3) + tuple(size)).astype(np.float32)
    session = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x})[0]
    with create_backend("lite", lite_path) as backend:
        got = backend.run(x)
    error = relative_error(got, expected)
    print("\n%s %dx%d Lite vs ONNX Runtime: %.3g" % (name, size[0], size[1], error))
    assert error <= LITE_TOL, "%s: Lite differs from ONNX Runtime by %.3g" % (name, error)
    return error


@pytest.mark.parametrize("name", FAST)
def test_built_graph_converts_and_runs_in_lite(name, tmp_path):
    _lite_against_onnx_runtime(name, tmp_path, (64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("name", architectures.names())
def test_every_variant_converts_and_runs_in_lite_full_size(name, tmp_path):
    _lite_against_onnx_runtime(name, tmp_path, (224, 224))
