"""ibnedge.onnx_builder: the ONNX graph built from an official-layout .pth equals the models.

For every registered variant, the tests' PyTorch reference (seeded random weights, random BN
running statistics, random IN/BN affines) is saved with ``torch.save``; ``train.convert``
turns the file into a MindSpore checkpoint, ``ibnedge.onnx_builder`` into an ONNX graph.
ONNX Runtime on the graph must equal MindSpore on the checkpoint within 1e-5 relative
(max |diff| / max |MindSpore logit|), and PyTorch within the converter's 1e-4. The fast set
runs four variants at small sizes; ``-m slow`` every variant at 224x224 and 256x128.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="the comparison needs the MindSpore models (Python 3.9+)")
torch = pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")
ort = pytest.importorskip("onnxruntime")

from ibnedge import architectures  # noqa: E402
from ibnedge.metadata import load_for_model  # noqa: E402
from ibnedge.onnx_builder import OnnxBuildError, build_from_pth, build_model  # noqa: E402
from ibnedge.pth_reader import load_state_dict  # noqa: E402
from pth_writer import random_state_dict, save_pth  # noqa: E402
from train.models import list_models  # noqa: E402
from train_helpers import converted_pair, relative_error  # noqa: E402

MINDSPORE_TOL = 1e-5
TORCH_TOL = 1e-4  # the converter's own bound against PyTorch (test_convert)

# IBN-a basic blocks, IBN-b (stem and post-add IN), IBN-a bottlenecks with SE, DenseNet's
# BN-first IBN; grouped convs (resnext*) are in the slow set, which covers every variant.
FAST = ["resnet_ibn_a_tiny", "resnet18_ibn_b", "se_resnet50_ibn_a", "densenet121_ibn_a"]
FAST_SIZES = [(64, 64), (64, 32)]
FULL_SIZES = [(224, 224), (256, 128)]


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def compare(name: str, tmp_path: Path, sizes, batch: int = 2):
    """Relative errors of ONNX Runtime against MindSpore and against PyTorch, per size."""
    ref, net = converted_pair(name, tmp_path)
    net.set_train(False)
    rng = np.random.default_rng(0)
    errors = {}
    for h, w in sizes:
        built = build_from_pth(tmp_path / (name + ".pth"), tmp_path / ("%s_%dx%d.onnx" % (name, h, w)),
                               input_size=(h, w))
        assert built.metadata.arch == name  # inferred from the file's keys and shapes
        x = rng.standard_normal((batch, 3, h, w)).astype(np.float32)
        got = onnx_logits(built.path, x)
        with torch.no_grad():
            expected_torch = ref(torch.from_numpy(x)).numpy()
        errors["mindspore %dx%d" % (h, w)] = relative_error(got, net(ms.Tensor(x)).asnumpy())
        errors["torch %dx%d" % (h, w)] = relative_error(got, expected_torch)
    print("\n%s ONNX Runtime max |diff| / max |logit|: %s" % (name, json.dumps({k: float("%.3g" % v) for k, v in errors.items()})))
    bad = {k: v for k, v in errors.items() if not v <= (MINDSPORE_TOL if k.startswith("mindspore") else TORCH_TOL)}
    assert not bad, "%s: the ONNX graph differs beyond tolerance: %s" % (name, bad)
    return errors


@pytest.mark.parametrize("name", FAST)
def test_onnx_equals_mindspore_small_inputs(name, tmp_path, record_property):
    for key, value in compare(name, tmp_path, FAST_SIZES).items():
        record_property(key, value)


@pytest.mark.slow
@pytest.mark.parametrize("name", architectures.names())
def test_onnx_equals_mindspore_full_size(name, tmp_path, record_property):
    for key, value in compare(name, tmp_path, FULL_SIZES).items():
        record_property(key, value)


def test_every_registered_model_is_described():
    assert list_models() == architectures.names()


def test_metadata_says_what_the_graph_is(tmp_path):
    pth = save_pth(random_state_dict("resnet_ibn_a_tiny", num_classes=7), tmp_path / "tiny-0123abcd.pth")
    built = build_from_pth(pth, input_size=(96, 64))
    assert built.path == tmp_path / "tiny-0123abcd.onnx"
    meta = load_for_model(built.path)
    assert meta == built.metadata
    assert (meta.arch, meta.num_classes, meta.source, meta.input_shape) == ("resnet_ibn_a_tiny", 7, pth.name, (-1, 3, 96, 64))
    assert (meta.preprocess.semantics, meta.preprocess.crop, meta.preprocess.resize) == ("pil", (96, 64), 256)
    session = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == ("input", ["batch", 3, 96, 64], "logits", ["batch", 7])
    for batch in (1, 3):  # the batch dimension is dynamic
        assert session.run(None, {"input": np.zeros((batch, 3, 96, 64), np.float32)})[0].shape == (batch, 7)


def official_keys(state):
    """What the reader returns: the state_dict without BN ``num_batches_tracked`` counters."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_headless_checkpoint_gives_features():
    state = official_keys(random_state_dict("resnet_ibn_a_tiny", num_classes=0))
    model = build_model("resnet_ibn_a_tiny", state, (64, 64))
    assert [o.name for o in model.graph.output] == ["features"]
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 128


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(tmp_path):
    state = official_keys(random_state_dict("resnet_ibn_a_tiny", 10))
    del state["layer2.0.bn1.IN.weight"]
    state["layer3.0.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    state["reid.bottleneck.weight"] = np.ones(128, np.float32)
    with pytest.raises(OnnxBuildError) as info:
        build_model("resnet_ibn_a_tiny", state, source="x.pth")
    message = str(info.value)
    assert message.startswith("x.pth does not match resnet_ibn_a_tiny")
    assert "missing layer2.0.bn1.IN.weight" in message and "unexpected reid.bottleneck.weight" in message
    assert "layer3.0.conv2.weight has shape (64, 64, 1, 1), expected (64, 64, 3, 3)" in message
    unknown = save_pth({"encoder.weight": np.zeros((3, 3), np.float32)}, tmp_path / "other.pth")
    with pytest.raises(architectures.UnknownArchitecture, match="other.pth: cannot infer the architecture.*--arch"):
        build_from_pth(unknown)
    with pytest.raises(architectures.UnknownArchitecture, match="did you mean: .*resnet50_ibn_a"):
        build_model("resnet50_ibn", state)
    assert not list(tmp_path.glob("*.onnx"))


def test_torch_free_writer_is_read_back_by_torch_and_by_the_reader(tmp_path):
    state = random_state_dict("resnet18_ibn_b", num_classes=5, seed=3)
    path = save_pth(state, tmp_path / "w.pth")
    loaded = torch.load(str(path), weights_only=True)
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key].numpy(), value)
    ours = load_state_dict(path)
    assert list(ours) == [k for k in state if not k.endswith("num_batches_tracked")]
