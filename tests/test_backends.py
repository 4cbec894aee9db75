"""Backends on real models: a small ONNX graph (onnx helper API) run by ONNX Runtime and,
converted by Lite's converter, by MindSpore Lite; a MindSpore graph exported to MINDIR and
run through GraphCell. Each runs only where its runtime is installed (Lite: the Python 3.7
environment; MindSpore: 3.9+)."""
from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_helpers import REPO, have, lite_model, make_tiny_onnx, run_py, subprocess_env, tiny_reference
from ibnedge import backends
from ibnedge.backends import BackendError, create_backend
from ibnedge.backends.base import captured_native_stderr, native_reason
from ibnedge.metadata import load_for_model

needs_lite = pytest.mark.skipif(not have("mindspore_lite"), reason="mindspore_lite not installed (Python 3.7 env)")
needs_ort = pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime not installed")
needs_ms = pytest.mark.skipif(not have("mindspore"), reason="MindSpore not installed (Python 3.9+ env)")
needs_onnx = pytest.mark.skipif(not have("onnx"), reason="onnx (model building) not installed")


def _batch(n, size=32, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def test_registry_and_unknown_name():
    assert set(backends.BACKENDS) == {"lite", "mindspore", "onnx"}
    assert backends.AUTO_ORDER == ("lite", "mindspore", "onnx")
    with pytest.raises(ValueError, match="unknown backend 'tflite': choose one of lite, mindspore, onnx, auto"):
        backends.get_backend_class("tflite")
    assert set(backends.installed_backends()) <= set(backends.BACKENDS)


def test_bad_arguments(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backends.get_backend_class("onnx")(model, device="tpu")
    with pytest.raises(ValueError, match="threads must be >= 0"):
        backends.get_backend_class("onnx")(model, threads=-1)
    with pytest.raises(BackendError, match="model file not found"):
        create_backend("auto", tmp_path / "absent.onnx")


def test_backend_refuses_other_formats(tmp_path):
    model = tmp_path / "weights.tflite"
    model.write_bytes(b"\0" * 16)
    for name in backends.installed_backends():
        with pytest.raises(BackendError, match="cannot read weights.tflite"):
            create_backend(name, model)
    with pytest.raises(BackendError, match="no installed backend can run"):
        create_backend("auto", model)


@needs_ort
@needs_onnx
def test_onnx_matches_numpy_reference(tmp_path):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    backend = create_backend("onnx", model, threads=1)
    assert backend.input_shape == (-1, 3, 32, 32)
    for n in (1, 5, 2):
        x = _batch(n, seed=n)
        np.testing.assert_allclose(backend.run(x), tiny_reference(x), rtol=1e-4, atol=1e-4)


@needs_ort
@needs_onnx
def test_auto_picks_a_backend_that_reads_onnx(tmp_path):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    backend = create_backend("auto", model)
    assert backend.name == "onnx"  # lite and mindspore do not read .onnx


@needs_ort
@needs_onnx
def test_fixed_batch_model_runs_any_batch(tmp_path):
    model = make_tiny_onnx(tmp_path / "fixed.onnx", batch=4)
    backend = create_backend("onnx", model)
    assert backend.fixed_batch == 4
    x = _batch(9)  # two full chunks and one zero-padded
    np.testing.assert_allclose(backend.run(x), tiny_reference(x), rtol=1e-4, atol=1e-4)


@needs_lite
@needs_onnx
def test_lite_converted_model_matches_reference_across_batch_sizes(tmp_path):
    onnx_path, lite_path = lite_model(tmp_path)
    assert lite_path.name == "tiny_lite.mindir"
    assert stat.S_IMODE(os.stat(str(lite_path)).st_mode) & stat.S_IRUSR
    assert load_for_model(lite_path) == load_for_model(onnx_path)  # metadata carried along
    backend = create_backend("lite", lite_path, threads=2)
    assert backend.input_shape == (-1, 3, 32, 32)
    for n in (1, 4, 2, 2, 7):  # shrink, grow and repeat: the batch dim is resized each time it changes
        x = _batch(n, seed=n)
        np.testing.assert_allclose(backend.run(x), tiny_reference(x), rtol=1e-4, atol=1e-4)
    assert create_backend("auto", lite_path).name == "lite"


@needs_lite
@needs_onnx
def test_lite_refuses_unconvertible_input_with_one_line(tmp_path):
    bogus = tmp_path / "bogus.mindir"
    bogus.write_bytes(b"\x08\x01garbage" * 20)
    with pytest.raises(BackendError, match=r"MindSpore Lite cannot load .*bogus\.mindir.*ibnedge convert"):
        create_backend("lite", bogus)


def _export_tiny_network(path):
    """A small MindSpore conv + dense network and the MINDIR file it is exported to (``path``.mindir)."""
    import mindspore as ms
    from mindspore import nn

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, has_bias=True)
            self.fc = nn.Dense(4, 6)

        def construct(self, x):
            return self.fc(self.conv(x).mean(axis=(2, 3)))

    ms.set_seed(0)
    net = Net()
    ms.export(net, ms.Tensor(np.zeros((2, 3, 16, 16), np.float32)), file_name=str(path), file_format="MINDIR")
    return net, str(path) + ".mindir"


@needs_ms
def test_mindspore_graphcell_matches_the_network(tmp_path):
    import mindspore as ms

    net, model = _export_tiny_network(tmp_path / "net")
    backend = create_backend("mindspore", model, threads=2)
    for n in (2, 3):  # the exported batch, and another one
        x = _batch(n, size=16)
        np.testing.assert_allclose(backend.run(x), net(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)


# A user's process that runs MindSpore (a tensor op, an in-process export) before it creates the
# backend: the first kernel fixes the device, and MindSpore refuses every set_device after it.
_BACKEND_AFTER_A_KERNEL = """
import sys
sys.path.insert(0, sys.argv[1])
import mindspore as ms
import numpy as np
print(ms.Tensor([1.0]) + 1)  # a kernel on the implicit device, before any device is chosen
from ibnedge.backends import BackendError, create_backend
from test_backends import _batch, _export_tiny_network
net, model = _export_tiny_network(sys.argv[2])
try:
    backend = create_backend("mindspore", model, device=sys.argv[3], threads=1)
except BackendError as exc:
    print("REFUSED %r" % str(exc))
    sys.exit(3)
for n in (2, 3):
    x = _batch(n, size=16)
    np.testing.assert_allclose(backend.run(x), net(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)
print("MATCHES")
"""


def _backend_after_a_kernel(tmp_path, device):
    return run_py(Path(sys.executable), ["-c", _BACKEND_AFTER_A_KERNEL, str(REPO / "tests"), str(tmp_path / "net"), device],
                  timeout=600, universal_newlines=True)


@needs_ms
def test_mindspore_backend_on_the_device_mindspore_already_runs_on(tmp_path):
    """MindSpore refuses set_device ("The runtime has been initialized") once a kernel ran on CPU;
    the backend asks for that same CPU, so it runs."""
    proc = _backend_after_a_kernel(tmp_path, "cpu")
    assert proc.returncode == 0 and "MATCHES" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


@needs_ms
def test_mindspore_backend_refuses_another_device_in_one_line(tmp_path):
    """After a kernel ran on CPU, --device gpu cannot be had in this process (MindSpore without GPU
    says it supports only CPU; with one, it refuses to switch): one line naming both devices."""
    proc = _backend_after_a_kernel(tmp_path, "gpu")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    message = ast.literal_eval(proc.stdout.split("REFUSED ", 1)[1].strip())
    assert message.startswith("MindSpore ") and "\n" not in message, message
    assert "GPU" in message.upper() and "CPU" in message, message


@needs_ms
def test_mindspore_graphcell_passes_after_a_module_that_ran_mindspore_in_the_process():
    """In one pytest process, an earlier module that ran MindSpore kernels without choosing a
    device (test_export.py) made the backend's set_device fail ("The runtime has been
    initialized"): the test run chooses CPU for MindSpore before any test (conftest)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_export.py::test_dynamic_batch",
         "tests/test_backends.py::test_mindspore_graphcell_matches_the_network"],
        cwd=str(REPO), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-3000:]


def test_backends_load_model_files_only(tmp_path):
    """Weights (.pth, .ckpt) are made into a model file before a backend is chosen
    (ibnedge.models): no backend takes them, so none needs the hub or train/."""
    for suffix in (".ckpt", ".pth"):
        weights = tmp_path / ("weights" + suffix)
        weights.write_bytes(b"\0" * 8)
        for name, cls in backends.BACKENDS.items():
            assert suffix not in cls.suffixes, (name, suffix)
            if cls.installed():
                with pytest.raises(BackendError, match="cannot read weights%s" % suffix):
                    create_backend(name, weights)


def test_captured_native_stderr_and_reason():
    with captured_native_stderr() as log:
        os.write(2, b"[ERROR] LITE(1,2,python):t [a.cc:1] F] Catch exception: the real reason\n")
    assert log and "the real reason" in log[0]
    assert native_reason(RuntimeError("build failed! Error is Common error code."), log) == "the real reason"
    assert native_reason(RuntimeError("specific failure\nstack"), log) == "specific failure"


@needs_lite
@needs_onnx
def test_lite_device_without_plugin_says_so(tmp_path):
    _, lite_path = lite_model(tmp_path)
    try:
        backend = create_backend("lite", lite_path, device="gpu")
    except BackendError as exc:
        assert "cannot use --device gpu" in str(exc) and "--device cpu" in str(exc)
    else:  # a Lite build with GPU support on a machine with a GPU: it must then run
        x = _batch(2)
        np.testing.assert_allclose(backend.run(x), tiny_reference(x), rtol=1e-3, atol=1e-3)
