"""train.export.export_model: MINDIR and ONNX files that compute what the MindSpore model computes.

Weights are randomised (including BN moving statistics and IN affines) so a dropped or
mis-exported normalisation cannot go unnoticed; ONNX runs in onnxruntime, MINDIR in
MindSpore's GraphCell; both must match eager MindSpore within 1e-4 x max |logit|.
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="export needs MindSpore 2.x (Python 3.9+)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from train.export import ExportError, export_model  # noqa: E402
from train.models import create_model, list_models  # noqa: E402
from train_helpers import randomise_norms, relative_error  # noqa: E402

REL_TOL = 1e-4
FAST = ["resnet_ibn_a_tiny", "resnet18_ibn_b"]
SLOW = [n for n in list_models() if n not in FAST]
# What the portable layers lower to; Lite 2.0's ONNX parser and every MindSpore backend take these.
ALLOWED_ONNX_OPS = {
    "Add", "AveragePool", "BatchNormalization", "Concat", "Constant", "Conv", "Div", "Gemm", "MatMul", "MaxPool",
    "Mul", "Pad", "ReduceMean", "Relu", "Reshape", "Sigmoid", "Slice", "Sqrt", "Sub", "Unsqueeze",
}


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def randomised(name: str, seed: int = 0):
    net = randomise_norms(create_model(name, num_classes=10), seed)
    net.set_train(False)
    return net


def check_onnx(net, path, shape, dynamic_batch=False):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    written = export_model(net, path, "ONNX", shape, dynamic_batch=dynamic_batch)
    assert written == path and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no scratch files, no extra suffix
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_ONNX_OPS, "unexpected ONNX ops: %s" % sorted(ops - ALLOWED_ONNX_OPS)
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert pools and not any(a.name == "dilations" for n in pools for a in n.attribute)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    error = relative_error(out, expected)
    print("\nONNX %s %s: max |diff| / max |logit| = %.3g" % (path.stem, shape, error))
    assert error <= REL_TOL
    return session, x, expected


def check_mindir(net, path, shape, dynamic_batch=False):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    assert export_model(net, path, "MINDIR", shape, dynamic_batch=dynamic_batch) == path
    graph = ms.nn.GraphCell(ms.load(str(path)))
    error = relative_error(graph(ms.Tensor(x)).asnumpy(), expected)
    print("\nMINDIR %s %s: max |diff| / max |logit| = %.3g" % (path.stem, shape, error))
    assert error <= REL_TOL
    return graph, x, expected


@pytest.mark.parametrize("name", FAST)
def test_onnx_matches_mindspore(name, tmp_path):
    check_onnx(randomised(name), tmp_path / (name + ".onnx"), (2, 3, 64, 64))


@pytest.mark.parametrize("name", FAST)
def test_mindir_matches_mindspore(name, tmp_path):
    check_mindir(randomised(name), tmp_path / (name + ".mindir"), (2, 3, 64, 48))


def test_dynamic_batch(tmp_path):
    net = randomised("resnet_ibn_a_tiny")
    session, x, expected = check_onnx(net, tmp_path / "onnx" / "dyn.onnx", (2, 3, 64, 64), dynamic_batch=True)
    assert session.get_inputs()[0].shape[0] == "batch"
    assert session.get_outputs()[0].shape[0] == "batch"  # not MindSpore's fixed 1
    x3 = np.concatenate([x, x[:1]])
    out = session.run(None, {session.get_inputs()[0].name: x3})[0]
    assert relative_error(out, np.concatenate([expected, expected[:1]])) <= REL_TOL
    graph, x, expected = check_mindir(net, tmp_path / "mindir" / "dyn.mindir", (2, 3, 64, 64), dynamic_batch=True)
    assert relative_error(graph(ms.Tensor(x[:1])).asnumpy(), expected[:1]) <= REL_TOL


def test_repeated_exports_of_one_model(tmp_path):
    """MindSpore 2.10's ONNX exporter rewrites its cached graph; a second export must still work."""
    net = randomised("resnet_ibn_a_tiny")
    for i in range(2):
        check_onnx(net, tmp_path / str(i) / "tiny.onnx", (1, 3, 32, 32))
    assert not net.training


def test_training_mode_is_restored_and_eval_is_exported(tmp_path):
    net = randomised("resnet_ibn_a_tiny")
    net.set_train(True)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = export_model(net, tmp_path / "t.onnx", "ONNX", x.shape)
    assert net.training
    net.set_train(False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x})[0]
    assert relative_error(out, net(ms.Tensor(x)).asnumpy()) <= REL_TOL  # moving statistics, not batch ones


def test_air_needs_ascend_and_bad_arguments(tmp_path):
    net = create_model("resnet_ibn_a_tiny")
    if ms.get_context("device_target") != "Ascend":
        with pytest.raises(ExportError, match="Ascend.*MINDIR"):
            export_model(net, tmp_path / "m.air", "AIR")
        assert not (tmp_path / "m.air").exists()
    with pytest.raises(ValueError, match="unknown export format 'TFLITE'"):
        export_model(net, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="input_shape"):
        export_model(net, tmp_path / "m.onnx", "ONNX", (3, 224, 224))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_every_variant_exports(name, tmp_path):
    net = randomised(name)
    check_onnx(net, tmp_path / (name + ".onnx"), (1, 3, 224, 224))
    check_mindir(net, tmp_path / (name + ".mindir"), (1, 3, 224, 224))
