"""ibnedge from its installed wheel (no train/, no source checkout), run from a user's folder
that holds a ``train.py`` of their own: ``import ibnedge`` and every command work, and
weights it cannot make into a model here are refused in one line naming the fix."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from edge_helpers import REPO

USER_TRAIN_PY = 'raise SystemExit("the user\'s own train.py was imported")\n'


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise RuntimeError("no site-packages in %s" % venv)
    return found[0]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this tree (as ``make test-wheel`` builds it),
    plus this interpreter's third-party packages (numpy, onnx, onnxruntime...) appended to
    its path: they come after the wheel, so nothing of the checkout is importable."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                            str(root), str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert built.returncode == 0, built.stdout.decode()
    wheel, = root.glob("ibnedge-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True)
    import numpy

    deps = Path(numpy.__file__).resolve().parent.parent
    (_site_packages(venv) / "zz_test_dependencies.pth").write_text(str(deps) + "\n")
    return venv


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory, imagenet_files) -> Path:
    from pth_writer import random_state_dict, save_pth

    root = tmp_path_factory.mktemp("user")
    (root / "train.py").write_text(USER_TRAIN_PY)
    photos = root / "photos"
    photos.mkdir()
    for f in imagenet_files[:3]:
        shutil.copy(str(f), str(photos / f.name))
    save_pth(random_state_dict("resnet_ibn_a_tiny", seed=2), root / "tiny-0a1b2c3d.pth")
    (root / "run.ckpt").write_bytes(b"\0" * 64)
    return root


def _run(venv: Path, args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(IBNEDGE_HOME=str(cwd / "home"), GLOG_v="3")
    return subprocess.run(args, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_import_comes_from_the_wheel(wheel_venv, user_dir):
    proc = _run(wheel_venv, [str(wheel_venv / "bin" / "python"), "-c",
                             "import ibnedge, ibnedge.cli, ibnedge.models, ibnedge._native, importlib.util as u; "
                             "print(ibnedge.__file__); print(u.find_spec('train').origin)"], user_dir)
    assert proc.returncode == 0, proc.stderr.decode()
    where, train = proc.stdout.decode().split()
    assert where.startswith(str(wheel_venv)), where
    assert train == str(user_dir / "train.py")  # the user's, which ibnedge must leave alone


def test_every_command_works_from_the_wheel(wheel_venv, user_dir):
    ibnedge = str(wheel_venv / "bin" / "ibnedge")
    for command in ([], ["infer"], ["convert"], ["bench"], ["doctor"]):
        proc = _run(wheel_venv, [ibnedge] + command + ["--help"], user_dir)
        assert proc.returncode == 0 and b"usage: ibnedge" in proc.stdout, (command, proc.stderr.decode())

    out = user_dir / "r.jsonl"
    proc = _run(wheel_venv, [ibnedge, "infer", "photos", "--model", "tiny-0a1b2c3d.pth", "--backend", "onnx",
                             "--output", str(out)], user_dir)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(out.read_text().splitlines()) == 3 and "train.py" not in proc.stderr.decode()
    built, = (user_dir / "home" / "models").glob("tiny-0a1b2c3d-*/tiny-0a1b2c3d.onnx")

    proc = _run(wheel_venv, [ibnedge, "doctor", "--model", str(built), "--json"], user_dir)
    assert proc.returncode in (0, 1) and b'"model"' in proc.stdout, proc.stderr.decode()
    proc = _run(wheel_venv, [ibnedge, "doctor", "--model", "tiny-0a1b2c3d.pth", "--json"], user_dir)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    made_here = json.loads(proc.stdout.decode())["facts"]["model"]["backends"]
    # the onnx builder is in the wheel; MindSpore also needs train/ (not in a wheel), and is
    # named as missing first where this interpreter has none (the 3.7 box); Lite where installed
    has = dict((m, importlib.util.find_spec(m) is not None) for m in ("mindspore", "mindspore_lite"))
    assert made_here["onnx"] == "" and (made_here["lite"] == "") == has["mindspore_lite"], made_here
    assert ("train/" if has["mindspore"] else "mindspore is not installed") in made_here["mindspore"], made_here
    proc = _run(wheel_venv, [ibnedge, "bench", "--model", str(built), "--backend", "onnx", "--batch", "1",
                             "--images", "2", "--repeat", "1", "--skip-preprocess", "--corpus", "photos"], user_dir)
    assert proc.returncode == 0, proc.stderr.decode()

    # what this box cannot do is one line with the fix, exit 2, no traceback
    proc = _run(wheel_venv, [ibnedge, "convert", str(built), "--to", "lite"], user_dir)
    assert proc.returncode in (0, 2) and b"Traceback" not in proc.stderr, proc.stderr.decode()
    proc = _run(wheel_venv, [ibnedge, "infer", "photos", "--model", "run.ckpt", "--backend", "onnx"], user_dir)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and "python -m train.export" in err, err
    assert "train.py" not in err
