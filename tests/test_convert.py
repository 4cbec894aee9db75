"""train.convert / ibnedge.pth_reader: exact, torch-free conversion of official-layout .pth files.

The proof of equivalence: the tests' own PyTorch reference (random weights, random BN
running statistics, random IN/BN affines) is saved with ``torch.save``, converted by our
reader and converter, loaded into MindSpore with ``load_checkpoint`` +
``load_param_into_net``, and must give the same logits, features and training-mode
(batch-statistics) outputs: max |diff| <= 1e-4 * max |reference logit|.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="the converter writes MindSpore checkpoints (Python 3.9+)")
torch = pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")

import torch_reference  # noqa: E402
from ibnedge.pth_reader import PthError, UnsafePickleError, load_pth, load_state_dict, source_dtype  # noqa: E402
from ibnedge.architectures import UnknownArchitecture, infer_arch  # noqa: E402
from train.convert import ConversionError, convert_file, convert_state_dict, torch_key_for  # noqa: E402
from train.models import create_model  # noqa: E402
from train_helpers import converted_pair, load_converted, relative_error  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REL_TOL = 1e-4

FAST = ["resnet_ibn_a_tiny", "resnet18_ibn_a", "resnet18_ibn_b"]
SLOW = [
    *["resnet%d_ibn_%s" % (d, v) for v in "ab" for d in (34, 50, 101, 152)],
    *["resnext%d_ibn_a" % d for d in (50, 101, 152)], *["se_resnet%d_ibn_a" % d for d in (50, 101, 152)],
    *["densenet%d_ibn_a" % d for d in (121, 161, 169, 201)], *["resnet%d" % d for d in (18, 34, 50, 101)],
]


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def compare(name, ref, net, sizes, batch=2):
    """Relative errors of logits and features (eval) per size, then training mode at the first size."""
    errors = {}
    rng = np.random.default_rng(0)
    ref.eval()
    net.set_train(False)
    for h, w in sizes:
        x = rng.standard_normal((batch, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            ref_logits = ref(torch.from_numpy(x)).numpy()
            ref_feats = ref.forward_features(torch.from_numpy(x)).numpy()
        errors["logits %dx%d" % (h, w)] = relative_error(net(ms.Tensor(x)).asnumpy(), ref_logits)
        errors["features %dx%d" % (h, w)] = relative_error(net.forward_features(ms.Tensor(x)).asnumpy(), ref_feats)
    h, w = sizes[0]
    x = rng.standard_normal((batch, 3, h, w)).astype(np.float32)
    ref.train()
    net.set_train(True)
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(x)).numpy()
    errors["train logits %dx%d" % (h, w)] = relative_error(net(ms.Tensor(x)).asnumpy(), ref_logits)
    net.set_train(False)
    ref.eval()
    print("\n%s max |diff| / max |logit|: %s" % (name, json.dumps({k: float("%.3g" % v) for k, v in errors.items()})))
    bad = {k: v for k, v in errors.items() if not v <= REL_TOL}
    assert not bad, "%s differs from PyTorch beyond %g: %s" % (name, REL_TOL, bad)
    return errors


@pytest.mark.parametrize("name", FAST)
def test_equivalence_small_inputs(name, tmp_path, record_property):
    ref, net = converted_pair(name, tmp_path)
    for key, value in compare(name, ref, net, [(64, 64), (64, 32)]).items():
        record_property(key, value)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST + SLOW)
def test_equivalence_full_size(name, tmp_path, record_property):
    ref, net = converted_pair(name, tmp_path)
    for key, value in compare(name, ref, net, [(224, 224), (256, 128)]).items():
        record_property(key, value)


def test_torch_is_not_imported_by_the_converter(tmp_path):
    """The CLI in a fresh interpreter: no torch import, arch inferred, a loadable checkpoint."""
    ref = torch_reference.build("resnet_ibn_a_tiny", num_classes=10)
    pth, ckpt = tmp_path / "tiny.pth", tmp_path / "tiny.ckpt"
    torch.save(ref.state_dict(), str(pth))
    probe = (
        "import sys, train.convert as c\n"
        "rc = c.main(sys.argv[1:])\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_FREE')\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(pth), str(ckpt)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "TORCH_FREE" in out.stdout and "resnet_ibn_a_tiny" in out.stdout and "10 classes" in out.stdout
    net = load_converted("resnet_ibn_a_tiny", ckpt, num_classes=10)
    x = np.random.default_rng(5).standard_normal((1, 3, 40, 56)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    net.set_train(False)
    assert relative_error(net(ms.Tensor(x)).asnumpy(), expected) <= REL_TOL


def test_cli_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    out = subprocess.run([sys.executable, "-m", "train.convert", str(bad), str(tmp_path / "o.ckpt")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "not a PyTorch checkpoint" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.ckpt").exists()


def _tiny_state_dict():
    return torch_reference.build("resnet_ibn_a_tiny", num_classes=10).state_dict()


def _assert_same_as_torch(loaded, state_dict):
    expected = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_formats_wrappers_dtypes_and_strides(tmp_path, legacy):
    state = _tiny_state_dict()
    state["fc.weight"] = state["fc.weight"].t().contiguous().t()  # a non-contiguous (transposed) view
    assert not state["fc.weight"].is_contiguous()
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].half()
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].bfloat16()
    base = torch.randn(50, 20)
    state["extra.view"] = base[3:13:2, 5:9]  # offset + strides into a shared storage
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 7, "arch": "resnet"}
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, str(path), _use_new_zipfile_serialization=not legacy)
    loaded = load_state_dict(path)
    _assert_same_as_torch(loaded, state)
    assert loaded["layer1.0.conv1.weight"].dtype == np.float16
    assert loaded["layer2.0.conv1.weight"].dtype == np.float32
    assert [source_dtype(loaded[k]) for k in ("layer1.0.conv1.weight", "layer2.0.conv1.weight", "fc.weight")] == [
        "float16", "bfloat16", "float32"]
    assert loaded["fc.weight"].flags.c_contiguous
    assert not any(k.endswith("num_batches_tracked") for k in loaded)
    del loaded["extra.view"]
    params, report = convert_state_dict(loaded, "resnet_ibn_a_tiny")
    assert report.ok and report.cast == {"float16": 1, "bfloat16": 1}  # both are reported as casts
    np.testing.assert_array_equal(params["fc.weight"], state["fc.weight"].numpy())
    np.testing.assert_array_equal(params["bn1.moving_variance"], state["bn1.running_var"].numpy())


def test_reader_keeps_a_parameter_object(tmp_path):
    torch.save(torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)), str(tmp_path / "p.pth"))
    np.testing.assert_array_equal(load_pth(tmp_path / "p.pth"), np.arange(6.0, dtype=np.float32).reshape(2, 3))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > %s" % _Exploit.marker,))


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_refuses_pickles_that_reference_other_globals(tmp_path, container):
    marker = tmp_path / "marker"
    _Exploit.marker = marker
    payload = pickle.dumps({"conv1.weight": _Exploit()}, protocol=2)
    path = tmp_path / "evil.pth"
    if container == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
            archive.writestr("evil/byteorder", "little")
    else:
        path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"global (os|posix)\.system"):
        load_state_dict(path)
    assert not marker.exists()
    crafted = tmp_path / "crafted.pth"  # protocol-0 pickle naming os.system explicitly
    crafted.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        load_pth(crafted)


def test_malformed_pickles_raise_pth_errors(tmp_path):
    cases = {
        "storage_called.pth": b"\x80\x02ctorch\nFloatStorage\n)R.",  # an allowed global misused
        "bad_rebuild.pth": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nK\x01\x85R.",  # no storage
        "not_magic.pth": pickle.dumps({"a": 1}, protocol=2),  # a pickle, but not torch.save's
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(PthError, match="corrupt|storage|not a PyTorch checkpoint"):
            load_pth(tmp_path / name)


def test_refuses_a_whole_pickled_module(tmp_path):
    torch.save(torch.nn.Linear(2, 2), str(tmp_path / "module.pth"))
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.linear.Linear.*state_dict"):
        load_pth(tmp_path / "module.pth")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_refuses_truncated_files(tmp_path, legacy):
    path = tmp_path / "full.pth"
    torch.save(_tiny_state_dict(), str(path), _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        short = tmp_path / ("short%d.pth" % cut)
        short.write_bytes(data[:cut])
        with pytest.raises(PthError, match="truncated|corrupt"):
            load_state_dict(short)


def test_refuses_a_corrupted_zip_record(tmp_path):
    path = tmp_path / "full.pth"
    torch.save(_tiny_state_dict(), str(path))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # local header, not central
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF  # flip one stored byte of the record
    path.write_bytes(bytes(data))
    with pytest.raises(PthError, match="corrupt"):
        load_state_dict(path)


def test_reports_missing_unexpected_and_mismatched_keys_by_name(tmp_path):
    state = {k: v.numpy() for k, v in _tiny_state_dict().items() if not k.endswith("num_batches_tracked")}
    del state["layer2.0.bn1.IN.weight"]
    state["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    state["layer3.0.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(ConversionError) as info:
        convert_state_dict(state, "resnet_ibn_a_tiny")
    message = str(info.value)
    assert "layer2.0.bn1.IN.weight" in message and "missing" in message
    assert "layer9.0.conv1.weight" in message
    assert "layer3.0.conv2.weight: checkpoint (64, 64, 1, 1), model (64, 64, 3, 3)" in message
    params, report = convert_state_dict(state, "resnet_ibn_a_tiny", strict=False)
    assert report.missing == ["layer2.0.bn1.IN.weight"] and report.unexpected == ["layer9.0.conv1.weight"]
    assert "layer2.0.bn1.IN.gamma" not in params and "layer3.0.conv2.weight" not in params
    assert "layer1.0.bn1.IN.gamma" in params


def test_no_strict_cli_writes_the_matching_parameters(tmp_path):
    """A re-ID style checkpoint: backbone plus an extra head layer; --strict refuses, --no-strict converts."""
    state = _tiny_state_dict()
    state["bottleneck.weight"] = torch.ones(128)
    pth = tmp_path / "reid.pth"
    torch.save(state, str(pth))
    with pytest.raises(ConversionError, match="not in resnet_ibn_a_tiny.*bottleneck.weight"):
        convert_file(pth, tmp_path / "o.ckpt", arch="resnet_ibn_a_tiny")  # --strict is the default
    assert not (tmp_path / "o.ckpt").exists()
    cmd = [sys.executable, "-m", "train.convert", str(pth), str(tmp_path / "o.ckpt"), "--arch", "resnet_ibn_a_tiny"]
    loose = subprocess.run(cmd + ["--no-strict"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert loose.returncode == 0 and "bottleneck.weight" in loose.stderr
    load_converted("resnet_ibn_a_tiny", tmp_path / "o.ckpt", num_classes=10)


def test_key_mapping():
    assert torch_key_for("layer1.0.bn1.IN.gamma") == "layer1.0.bn1.IN.weight"
    assert torch_key_for("layer1.0.bn1.BN.moving_variance") == "layer1.0.bn1.BN.running_var"
    assert torch_key_for("layer2.0.downsample.0.weight") == "layer2.0.downsample.0.weight"
    assert torch_key_for("layer2.0.downsample.1.gamma") == "layer2.0.downsample.1.weight"
    assert torch_key_for("layer2.0.downsample.1.moving_mean") == "layer2.0.downsample.1.running_mean"
    assert torch_key_for("fc.bias") == "fc.bias"
    # every parameter of every fast model maps to a distinct key of the reference
    for name in ["resnet_ibn_a_tiny", "resnet18_ibn_b"]:
        keys = [torch_key_for(p.name) for p in create_model(name).get_parameters()]
        ref_keys = [k for k in torch_reference.build(name).state_dict() if not k.endswith("num_batches_tracked")]
        assert sorted(keys) == sorted(ref_keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", [pytest.param(n) for n in FAST] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_architecture_is_inferred_from_the_keys(name):
    state = {k: v.numpy() for k, v in torch_reference.build(name).state_dict().items()}
    assert infer_arch(state) == name


def test_unknown_architecture_is_reported_naming_the_file_once(tmp_path):
    unknown = tmp_path / "encoder.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, str(unknown))
    with pytest.raises(UnknownArchitecture, match="cannot infer the architecture.*--arch") as info:
        convert_file(unknown, tmp_path / "o.ckpt")
    assert str(info.value).startswith("%s: cannot infer" % unknown) and str(info.value).count("encoder.pth") == 1
    state = _tiny_state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)  # a width no registered model has
    wide = tmp_path / "wide.pth"
    torch.save(state, str(wide))
    with pytest.raises(UnknownArchitecture, match="wide.pth: cannot infer") as info:
        convert_file(wide, tmp_path / "o.ckpt")
    assert str(info.value).count("wide.pth") == 1 and not (tmp_path / "o.ckpt").exists()
    with pytest.raises(ConversionError) as info:  # a strict mismatch names the file once too
        convert_file(wide, tmp_path / "o.ckpt", arch="resnet_ibn_a_tiny")
    assert str(info.value).startswith("%s does not match resnet_ibn_a_tiny" % wide)
    assert str(info.value).count("wide.pth") == 1


def test_the_converter_does_not_import_the_checkpoint_module(tmp_path):
    """train.checkpoint imports train.convert (to read a .pth); train.convert writes what a
    .ckpt holds through train.model_info, never back through train.checkpoint (no cycle)."""
    pth = tmp_path / "tiny.pth"
    torch.save(_tiny_state_dict(), str(pth))
    probe = (
        "import sys, train.convert as c\n"
        "c.convert_file(sys.argv[1], sys.argv[2])\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('train.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(pth), str(tmp_path / "tiny.ckpt")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split("LOADED", 1)[1]
    assert "train.model_info" in loaded and "train.checkpoint" not in loaded, loaded
