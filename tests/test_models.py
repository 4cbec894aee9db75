"""train.models: registry behaviour, the model contract, IBN placement, layer maths, parameter counts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="the model zoo needs MindSpore 2.x (Python 3.9+)")
torch = pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")

import torch_reference  # noqa: E402
from ibnedge import architectures  # noqa: E402
from train.convert import mindspore_name  # noqa: E402
from train.models import IBN, InstanceNorm2d, MaxPool2dSymmetric, create_model, list_models, register_model  # noqa: E402
from train.models.__main__ import count_parameters  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

OFFICIAL = [
    *["resnet%d_ibn_%s" % (d, v) for v in "ab" for d in (18, 34, 50, 101, 152)],
    *["resnext%d_ibn_a" % d for d in (50, 101, 152)],
    *["se_resnet%d_ibn_a" % d for d in (50, 101, 152)],
    *["densenet%d_ibn_a" % d for d in (121, 161, 169, 201)],
    *["resnet%d" % d for d in (18, 34, 50, 101)],
]
FAST = ["resnet_ibn_a_tiny", "resnet18_ibn_a", "resnet18_ibn_b"]
SLOW = [n for n in OFFICIAL if n not in FAST]
ALL = [pytest.param(n) for n in FAST] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_registry_has_every_variant():
    assert set(OFFICIAL + ["resnet_ibn_a_tiny"]) <= set(list_models())
    assert list_models("resnet*_ibn_b") == ["resnet101_ibn_b", "resnet152_ibn_b", "resnet18_ibn_b", "resnet34_ibn_b", "resnet50_ibn_b"]
    assert list_models() == sorted(list_models())


def test_duplicate_name_is_an_error():
    def resnet18_ibn_a(**kwargs):  # same name as the registered constructor
        raise AssertionError("must never be registered")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet18_ibn_a)
    assert create_model("resnet18_ibn_a", num_classes=3).num_classes == 3


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean: .*resnet50_ibn_a"):
        create_model("resnet50_ibn")


def test_create_model_drops_none_kwargs():
    net = create_model("resnet_ibn_a_tiny", num_classes=None, channels=None, stem_width=None)
    assert net.num_classes == 1000 and net.num_features == 128


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="ibn entries must be 'a', 'b' or None"):
        create_model("resnet_ibn_a_tiny", ibn=("c", None, None, None))
    with pytest.raises(ValueError, match="basic blocks support neither ResNeXt grouping nor SE"):
        create_model("resnet18_ibn_a", se=True)
    with pytest.raises(TypeError, match="depth"):  # not a field of the description
        create_model("resnet18_ibn_a", depth=18)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet_ibn_a_tiny", num_classes=-1)


@pytest.mark.parametrize("name", ALL)
def test_model_contract(name):
    """logits, pooled features at any (non-square) size, head, reset_classifier, features mode."""
    net = create_model(name, num_classes=7)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32))
    logits = net(x)
    feats = net.forward_features(x)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, net.num_features)
    np.testing.assert_allclose(net.forward_head(feats).asnumpy(), logits.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net.forward_head(feats, pre_logits=True).asnumpy(), feats.asnumpy())
    net.reset_classifier(3)
    assert net(x).shape == (2, 3) and net.num_classes == 3
    names = [p.name for p in net.get_parameters()]
    head = "classifier" if name.startswith("densenet") else "fc"
    assert names[-2:] == [head + ".weight", head + ".bias"]
    net.reset_classifier(0)
    np.testing.assert_allclose(net(x).asnumpy(), feats.asnumpy(), rtol=1e-6, atol=1e-6)
    features_only = create_model(name, num_classes=0)
    assert not any(p.name.startswith(head + ".") for p in features_only.get_parameters())


@pytest.mark.parametrize("name", ALL)
def test_description_lists_the_parameters_of_both_models(name):
    """ibnedge.architectures gives the PyTorch reference's state_dict (keys, shapes and order)
    and, renamed by train.convert, exactly the MindSpore model's parameters."""
    tensors = architectures.get(name).tensors(10)
    reference = torch_reference.build(name, num_classes=10).state_dict()
    assert [(t.key, t.shape) for t in tensors] == [
        (k, tuple(v.shape)) for k, v in reference.items() if not k.endswith("num_batches_tracked")]
    net = create_model(name, num_classes=10)
    assert sorted((mindspore_name(t), t.shape) for t in tensors) == sorted((p.name, tuple(p.shape)) for p in net.get_parameters())


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_pytorch(name):
    assert count_parameters(create_model(name)) == torch_reference.param_count(torch_reference.build(name))


def test_resnet50_ibn_a_has_25_56_m_parameters():
    assert count_parameters(create_model("resnet50_ibn_a")) == 25_557_032


def test_ibn_a_placement():
    net = create_model("resnet18_ibn_a")
    for stage in ("layer1", "layer2", "layer3"):
        for block in getattr(net, stage):
            assert isinstance(block.bn1, IBN) and block.IN is None
    for block in net.layer4:
        assert isinstance(block.bn1, ms.nn.BatchNorm2d)
    assert isinstance(net.bn1, ms.nn.BatchNorm2d)
    ibn = net.layer2[0].bn1
    assert ibn.IN.num_features == 64 and ibn.BN.num_features == 64  # first half IN


def test_ibn_b_placement():
    net = create_model("resnet34_ibn_b")
    assert isinstance(net.bn1, InstanceNorm2d)
    for stage, last_has_in in (("layer1", True), ("layer2", True), ("layer3", False), ("layer4", False)):
        blocks = list(getattr(net, stage))
        assert all(b.IN is None for b in blocks[:-1])
        assert (blocks[-1].IN is not None) == last_has_in
        assert all(isinstance(b.bn1, ms.nn.BatchNorm2d) for b in blocks)


def _instance_norm_case(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 4, 5, 7)) * 3 + 2).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)  # d(loss)/d(output)
    return x, gamma, beta, upstream


def _instance_norm_layer(gamma, beta, portable: bool) -> InstanceNorm2d:
    layer = InstanceNorm2d(4, portable=portable)
    layer.gamma.set_data(ms.Tensor(gamma))
    layer.beta.set_data(ms.Tensor(beta))
    return layer


@pytest.mark.parametrize("portable", [False, True], ids=["fused", "portable"])
def test_instance_norm_uses_per_sample_statistics_in_train_and_eval(portable):
    x, gamma, beta, _ = _instance_norm_case()
    layer = _instance_norm_layer(gamma, beta, portable)
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * gamma[None, :, None, None] + beta[None, :, None, None]
    for training in (False, True, False):  # and no state carried over from training
        layer.set_train(training)
        np.testing.assert_allclose(layer(ms.Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("portable", [False, True], ids=["fused", "portable"])
@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_instance_norm_gradients_match_pytorch(portable, mode):
    """Both forms train alike: d/dx, d/dgamma, d/dbeta equal torch's instance_norm backward."""
    x, gamma, beta, upstream = _instance_norm_case(seed=4)
    layer = _instance_norm_layer(gamma, beta, portable)
    layer.set_train(True)
    weights = ms.Tensor(upstream)

    def loss(inp):
        return (layer(inp) * weights).sum()

    if mode == "graph":
        ms.set_context(mode=ms.GRAPH_MODE)
    grad_fn = ms.value_and_grad(loss, grad_position=0, weights=layer.trainable_params())
    _, (dx, (dgamma, dbeta)) = grad_fn(ms.Tensor(x))

    tx = torch.from_numpy(x).requires_grad_()
    tg, tb = torch.from_numpy(gamma).requires_grad_(), torch.from_numpy(beta).requires_grad_()
    out = torch.nn.functional.instance_norm(tx, weight=tg, bias=tb, eps=1e-5)
    (out * torch.from_numpy(upstream)).sum().backward()
    for name, ours, ref in (("x", dx, tx.grad), ("gamma", dgamma, tg.grad), ("beta", dbeta, tb.grad)):
        ref = ref.numpy()
        err = float(np.abs(ours.asnumpy() - ref).max() / np.abs(ref).max())
        assert err <= 1e-5, "d/d%s differs from PyTorch by %.3g (relative)" % (name, err)


def test_portable_ops_switches_every_instance_norm_and_restores_them():
    from train.models import portable_ops

    net = create_model("resnet18_ibn_b", num_classes=5)  # IN in the stem and after residual adds
    net.set_train(False)
    layers = [c for _, c in net.cells_and_names() if isinstance(c, InstanceNorm2d)]
    assert len(layers) >= 3 and not any(c.portable for c in layers)
    x = ms.Tensor(np.random.default_rng(5).standard_normal((2, 3, 48, 48)).astype(np.float32))
    fused = net(x).asnumpy()
    with portable_ops(net):
        assert all(c.portable for c in layers)
        portable = net(x).asnumpy()
    assert not any(c.portable for c in layers)
    np.testing.assert_allclose(portable, fused, rtol=1e-5, atol=1e-5 * np.abs(fused).max())


@pytest.mark.parametrize("size", [(9, 9), (10, 7), (1, 2), (112, 111)])
def test_symmetric_max_pool_matches_pytorch(size):
    x = np.abs(np.random.default_rng(2).standard_normal((2, 3) + size)).astype(np.float32)  # post-ReLU input
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    np.testing.assert_array_equal(MaxPool2dSymmetric(3, 2, 1)(ms.Tensor(x)).asnumpy(), expected)


@pytest.mark.parametrize("name", ["resnet_ibn_a_tiny", "resnet18_ibn_b", *[
    pytest.param(n, marks=pytest.mark.slow) for n in ("densenet121_ibn_a", "resnext101_ibn_a", "se_resnet101_ibn_a")]])
def test_graph_mode_matches_pynative(name):
    """The training loop compiles graphs; the same weights give the same logits there."""
    net = create_model(name, num_classes=5)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(3).standard_normal((2, 3, 48, 48)).astype(np.float32))
    eager = net(x).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = net(x).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)


def test_cli_lists_names_and_counts():
    out = subprocess.run(
        [sys.executable, "-m", "train.models", "--list", "resnet_ibn_a_tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["resnet_ibn_a_tiny", "438,456"]
