"""Small REAL models for the app's tests (no mocks): an ONNX graph built with the onnx
helper API (Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm), its numpy reference,
and its MindSpore Lite conversion. Used where the model zoo's exports are not needed or
not available (the Python 3.7 Lite environment has no MindSpore)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

from ibnedge.metadata import ModelMetadata, PreprocessSpec, embed_in_onnx, save_for_model

REPO = Path(__file__).resolve().parents[1]
PY37 = REPO / ".venv37" / "bin" / "python"
PY311 = REPO / ".venv" / "bin" / "python"


def tiny_weights(num_classes: int, channels: int = 8, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W": (rng.standard_normal((channels, 3, 3, 3)) * 0.5).astype(np.float32),
        "B": (rng.standard_normal(channels) * 0.1).astype(np.float32),
        "G": rng.standard_normal((num_classes, channels)).astype(np.float32),
        "gb": (rng.standard_normal(num_classes) * 0.1).astype(np.float32),
    }


def make_tiny_onnx(
    path: Path,
    num_classes: int = 10,
    size: int = 32,
    batch: Optional[int] = None,
    seed: int = 0,
    class_names: Optional[List[str]] = None,
    semantics: str = "pil",
    sidecar: bool = True,
    embedded: bool = False,
) -> Path:
    """A conv classifier as ONNX (dynamic batch unless ``batch``), with its metadata beside
    it (``sidecar``) and/or inside it (``embedded``, as train.export writes it)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = tiny_weights(num_classes, seed=seed)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "G", "gb"], ["logits"], transB=1),
    ]
    n = batch if batch else "N"
    graph = helper.make_graph(
        nodes,
        "tiny_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, num_classes])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by onnxruntime 1.14 and Lite 2.0's parser
    onnx.checker.check_model(model)
    meta = ModelMetadata(
        arch="tiny_conv",
        num_classes=num_classes,
        preprocess=PreprocessSpec(resize=size + size // 7, crop=(size, size), semantics=semantics),
        class_names=class_names,
        input_shape=(batch or -1, 3, size, size),
        source="random-init",
    )
    if embedded:
        embed_in_onnx(model, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if sidecar:
        save_for_model(meta, path)
    return path


def tiny_reference(x: np.ndarray, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    """What the tiny graph computes, in float64 numpy."""
    w = tiny_weights(num_classes, seed=seed)
    x = x.astype(np.float64)
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h + 2 - 3) // 2 + 1, (wd + 2 - 3) // 2 + 1
    out = np.zeros((n, w["W"].shape[0], oh, ow))
    for dy in range(3):
        for dx in range(3):
            patch = xp[:, :, dy:dy + 2 * oh:2, dx:dx + 2 * ow:2]  # (n, 3, oh, ow)
            out += np.einsum("nchw,oc->nohw", patch, w["W"][:, :, dy, dx].astype(np.float64))
    out += w["B"][None, :, None, None]
    pooled = np.maximum(out, 0).mean(axis=(2, 3))
    return pooled @ w["G"].T.astype(np.float64) + w["gb"]


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def lite_model(tmp: Path, **kw) -> Tuple[Path, Path]:
    """(onnx, lite mindir) of the tiny graph, converted in THIS interpreter's Lite."""
    from ibnedge.convert import convert_to_lite

    onnx_path = make_tiny_onnx(tmp / "tiny.onnx", **kw)
    return onnx_path, convert_to_lite(onnx_path)


def run_py(python: Path, args: List[str], env: Optional[Dict[str, str]] = None, **kw) -> subprocess.CompletedProcess:
    """Run ``python args`` with the repository on PYTHONPATH (``train`` is not installed as a
    package; ibnedge's editable install still supplies the compiled module), from ``/`` by
    default so nothing depends on the caller's directory. ``env`` adds variables."""
    kw.setdefault("cwd", "/")
    return subprocess.run([str(python)] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=subprocess_env(env), **kw)


def subprocess_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment every test subprocess gets: the repository first on PYTHONPATH and
    MindSpore's C++ log at errors only (unless set), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("GLOG_v", "3")
    env.update(extra or {})
    return env


def run_in_mount_namespace(setup: str, argv: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    """``argv`` after the shell commands ``setup`` (mounts) in a private mount namespace of its
    own, with ``subprocess_env(env)``; skips where this machine gives none (not root, no
    unshare). Mounts made there are gone with the child."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here")
    script = "mount --make-rprivate / && %s && exec \"$@\"" % setup
    full = subprocess_env(env)
    probe = subprocess.run([unshare, "-m", "sh", "-c", script, "sh", "true"], env=full,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        pytest.skip("no private mount namespace here (%s)" % probe.stdout.decode().strip())
    return subprocess.run([unshare, "-m", "sh", "-c", script, "sh"] + argv, env=full, cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def interpreter_or_skip(python: Path, module: str) -> Path:
    if not python.exists():
        pytest.skip("%s is absent: create it with `make %s`" % (python, "venv37" if "37" in str(python) else "venv"))
    probe = run_py(python, ["-c", "import %s" % module])
    if probe.returncode != 0:
        pytest.skip("%s cannot import %s" % (python, module))
    return python


__all__ = [
    "PY37",
    "PY311",
    "REPO",
    "subprocess_env",
    "have",
    "interpreter_or_skip",
    "lite_model",
    "make_tiny_onnx",
    "run_py",
    "tiny_reference",
]
