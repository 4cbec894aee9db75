"""ibnedge.architectures: the framework-free description of every variant.

Its official keys are checked against the PyTorch reference and the MindSpore models in
test_models (``test_description_lists_the_parameters_of_both_models``); here, what needs
neither: the records, the IBN splits, and architecture inference from keys and shapes,
for every variant, in both interpreters.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from ibnedge import architectures
from ibnedge.architectures import Norm, UnknownArchitecture, ibn_norm, infer_arch, num_classes_of

# shared/notes/ibn-net.md: the v1.0 release of the official repository.
RELEASED = {
    "resnet18_ibn_a": "resnet18_ibn_a-2f571257.pth", "resnet34_ibn_a": "resnet34_ibn_a-94bc1577.pth",
    "resnet50_ibn_a": "resnet50_ibn_a-d9d0bb7b.pth", "resnet101_ibn_a": "resnet101_ibn_a-59ea0ac6.pth",
    "resnet18_ibn_b": "resnet18_ibn_b-bc2f3c11.pth", "resnet34_ibn_b": "resnet34_ibn_b-04134c37.pth",
    "resnet50_ibn_b": "resnet50_ibn_b-9ca61e85.pth", "resnet101_ibn_b": "resnet101_ibn_b-c55f6dba.pth",
    "resnext101_ibn_a": "resnext101_ibn_a-6ace051d.pth", "se_resnet101_ibn_a": "se_resnet101_ibn_a-fabed4e2.pth",
    "densenet121_ibn_a": "densenet121_ibn_a-e4af5cc1.pth", "densenet169_ibn_a": "densenet169_ibn_a-9f32c161.pth",
}
UPSTREAM_WITHOUT_WEIGHTS = ["resnet152_ibn_a", "resnet152_ibn_b", "resnext50_ibn_a", "resnext152_ibn_a",
                            "se_resnet50_ibn_a", "se_resnet152_ibn_a", "densenet161_ibn_a", "densenet201_ibn_a"]


class _Shaped:
    """A stand-in tensor: inference reads shapes only."""

    def __init__(self, shape) -> None:
        self.shape = tuple(shape)


def shapes_of(name: str, num_classes: int = 1000):
    return {t.key: _Shaped(t.shape) for t in architectures.get(name).tensors(num_classes)}


def test_records_and_released_weights():
    names = architectures.names()
    ibn = [n for n in names if "_ibn_" in n and n != "resnet_ibn_a_tiny"]
    assert len(ibn) == 20 and sorted(ibn) == sorted(list(RELEASED) + UPSTREAM_WITHOUT_WEIGHTS)
    assert {n: architectures.get(n).weights for n in names if architectures.get(n).weights} == RELEASED
    assert architectures.get("resnet50_ibn_a").weights_url == (
        "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth")
    dn161 = architectures.get("densenet161_ibn_a")
    assert (dn161.growth_rate, dn161.num_init_features, dn161.block_config, dn161.num_features) == (48, 96, (6, 12, 36, 24), 2208)


def test_ibn_splits_follow_the_official_code():
    assert ibn_norm(64, 0.5) == Norm(64, 32, True)
    assert ibn_norm(64, 0.5).parts() == [("IN", "in", 32), ("BN", "bn", 32)]
    assert ibn_norm(100, 0.4, instance_first=False).parts() == [("BN", "bn", 60), ("IN", "in", 40)]
    assert ibn_norm(65, 0.4, instance_first=False).parts() == [("BN", "bn", 39), ("IN", "in", 26)]  # int(65 * 0.6)
    assert Norm(8).parts() == [("", "bn", 8)] and Norm(8, 8).parts() == [("", "in", 8)]
    with pytest.raises(ValueError, match="leaves no channel"):
        ibn_norm(1, 0.5)


def test_layer_plan_places_ibn_as_upstream():
    r50b = architectures.get("resnet50_ibn_b")
    assert r50b.stem_norm() == Norm(64, 64)
    stages = r50b.stages()
    assert [[b.post_add_norm for b in s] for s in stages] == [[False, False, True], [False] * 3 + [True],
                                                             [False] * 6, [False] * 3]
    assert not any(b.norm1.mixed for s in stages for b in s)
    x50 = architectures.get("resnext50_ibn_a").stages()
    assert (x50[0][0].width, x50[0][0].groups, x50[0][0].norm1) == (128, 32, Norm(128, 64))
    assert not any(b.norm1.mixed for b in x50[3])
    se = architectures.get("se_resnet50_ibn_a").stages()
    assert [b.se_hidden for b in se[0]] == [16, 16, 16] and se[3][0].se_hidden == 128
    dn = architectures.get("densenet121_ibn_a").blocks()
    assert [i for i, layer in enumerate(dn[0].layers) if layer.norm1.mixed] == [0, 3]
    assert not any(layer.norm1.mixed for layer in dn[3].layers)
    assert dn[0].transition.out_channels == 128 and dn[3].transition is None


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="ibn entries"):
        architectures.ResNetArch("x", ibn=("c", None, None, None))
    with pytest.raises(ValueError, match="basic blocks support neither"):
        architectures.ResNetArch("x", block="basic", cardinality=32)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        architectures.get("resnet18").tensors(-1)


@pytest.mark.parametrize("name", architectures.names())
def test_every_variant_is_inferred_from_its_keys(name):
    assert infer_arch(shapes_of(name)) == name
    assert infer_arch(shapes_of(name, num_classes=0)) == name  # headless
    assert infer_arch(shapes_of(name, num_classes=7)) == name
    with_extras = dict(shapes_of(name), **{"reid.bottleneck.weight": _Shaped((2048,)), "moments.fc.weight": _Shaped((3,))})
    assert infer_arch(with_extras) == name  # a re-ID head, optimizer state


def test_inference_reports_the_closest_variant():
    state = shapes_of("resnet50_ibn_a")
    state["conv1.weight"] = _Shaped((32, 3, 7, 7))  # a stem no variant has
    del state["layer4.2.conv3.weight"]
    with pytest.raises(UnknownArchitecture, match=r"closest: resnet50_ibn_a, which also needs "
                                                  r"conv1.weight, layer4.2.conv3.weight\).*--arch NAME \(one of"):
        infer_arch(state)
    with pytest.raises(UnknownArchitecture, match="cannot infer the architecture from the checkpoint's keys: pass"):
        infer_arch({"encoder.weight": _Shaped((3, 3))})
    with pytest.raises(UnknownArchitecture, match=r"^encoder\.pth: cannot infer the architecture from the checkpoint"):
        infer_arch({"encoder.weight": _Shaped((3, 3))}, source="encoder.pth")
    assert num_classes_of(shapes_of("densenet121_ibn_a", 5)) == 5 and num_classes_of({}) == 0


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownArchitecture, match="unknown model 'resnet50_ibn': did you mean: .*resnet50_ibn_a"):
        architectures.get("resnet50_ibn")


def test_description_imports_nothing_heavy():
    probe = "import sys, ibnedge.architectures\nprint(sorted(m for m in ('numpy', 'onnx', 'ibnedge._native') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
