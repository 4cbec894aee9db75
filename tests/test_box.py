"""The edge box: Python 3.7 with ibnedge, onnx and MindSpore Lite, and neither PyTorch nor
MindSpore nor this project's train/. ``ibnedge infer photos/ --model <official .pth>`` builds
the network's ONNX graph itself (ibnedge.onnx_builder), converts it with Lite's converter
and classifies, run from a folder holding a user's own ``train.py``; its top-5 equals
MindSpore's (the 3.11 environment, through train.export) on the same weights.

The ``.pth`` holds seeded random weights in the official layout (tests/pth_writer.py),
under the official file name; the architecture is read from its keys.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from edge_helpers import PY37, PY311, interpreter_or_skip
from ibnedge import architectures
from ibnedge.results import read_rows

OFFICIAL_NAME = "resnet50_ibn_a-d9d0bb7b.pth"
USER_TRAIN_PY = 'raise SystemExit("the user\'s own train.py was imported")\n'


def _box_python() -> Path:
    """The 3.7 environment, checked to be a box: Lite and onnx, no torch, no MindSpore."""
    interpreter_or_skip(PY37, "mindspore_lite")
    probe = _run(PY37, ["-c", "import importlib.util as u, json; print(json.dumps(dict((m, u.find_spec(m) is not None) "
                              "for m in ('onnx', 'mindspore_lite', 'torch', 'mindspore'))))"], Path("/"))
    assert json.loads(probe.stdout.decode()) == {"onnx": True, "mindspore_lite": True, "torch": False,
                                                  "mindspore": False}
    return PY37


def _run(python: Path, args: List[str], cwd: Path, env: Dict[str, str] = None):
    """``python args`` from ``cwd`` with the caller's environment plus ``env``, and WITHOUT
    the repository on PYTHONPATH: only what is installed in that interpreter (ibnedge)."""
    import os
    import subprocess

    full = dict(os.environ)
    full.pop("PYTHONPATH", None)
    full.setdefault("GLOG_v", "3")
    full.update(env or {})
    return subprocess.run([str(python)] + args, cwd=str(cwd), env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def box(tmp_path_factory, imagenet_files):
    """A user's folder: photographs, the official weights' file, and a train.py of their own."""
    from pth_writer import random_state_dict, save_pth

    root = tmp_path_factory.mktemp("box")
    photos = root / "photos"
    photos.mkdir()
    for f in imagenet_files[:6]:
        shutil.copy(str(f), str(photos / f.name))
    save_pth(random_state_dict("resnet50_ibn_a", seed=3), root / OFFICIAL_NAME)
    (root / "train.py").write_text(USER_TRAIN_PY)
    return root


def _infer(python: Path, box: Path, name: str, *extra: str, model: str = OFFICIAL_NAME) -> Tuple[List[dict], str]:
    out = box / (name + ".jsonl")
    proc = _run(python, ["-m", "ibnedge", "infer", "photos", "--model", model, "--topk", "5",
                         "--output", str(out)] + list(extra), box, {"IBNEDGE_HOME": str(box / ("home-" + name))})
    assert proc.returncode == 0, proc.stderr.decode()
    return read_rows(out), proc.stderr.decode()


@pytest.fixture(scope="module")
def lite_rows(box):
    return _infer(_box_python(), box, "lite")


def test_box_classifies_photos_from_an_official_pth(box, lite_rows):
    rows, log = lite_rows
    assert "backend lite, pil preprocessing" in log, log
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f.name for f in (box / "photos").iterdir())
    assert all(len(r["top"]) == 5 for r in rows), rows
    entry, = (box / "home-lite" / "models").glob("resnet50_ibn_a-d9d0bb7b-*")
    for made in ("resnet50_ibn_a-d9d0bb7b.onnx", "resnet50_ibn_a-d9d0bb7b_lite.mindir"):
        meta = json.loads((entry / made).with_suffix(".json").read_text())
        assert (meta["version"], meta["arch"], meta["origin"]) == (2, "resnet50_ibn_a", "official"), made
        assert meta["preprocess"]["semantics"] == "pil"
    # a second run loads the cached Lite model: nothing is made again
    made = dict((f.name, f.stat().st_mtime_ns) for f in entry.iterdir())
    again, _ = _infer(PY37, box, "lite")
    assert again == rows and dict((f.name, f.stat().st_mtime_ns) for f in entry.iterdir()) == made


@pytest.mark.needs_mindspore
def test_box_top5_equals_mindspore_on_the_same_weights(box, lite_rows):
    """MindSpore (3.11, the train package's network through train.export) on the same .pth:
    the same five classes in the same order for every photograph, probabilities within 2e-6."""
    interpreter_or_skip(PY311, "mindspore")
    ms_rows, log = _infer(PY311, box, "mindspore", "--backend", "mindspore")
    assert "backend mindspore, pil preprocessing" in log, log
    lite = dict((r["path"], r["top"]) for r in lite_rows[0])
    assert sorted(lite) == sorted(r["path"] for r in ms_rows)
    for row in ms_rows:
        assert [t["index"] for t in row["top"]] == [t["index"] for t in lite[row["path"]]], row["path"]
        for a, b in zip(row["top"], lite[row["path"]]):
            assert abs(a["prob"] - b["prob"]) <= 2e-6, (row["path"], a, b)


def _same_top5(ms_top: List[dict], lite_top: List[dict], tol: float) -> bool:
    """The same probabilities rank by rank within ``tol``, and the same class at every rank
    whose probability is more than ``tol`` from its neighbours' (two classes closer than
    the two runtimes' rounding may come in either order)."""
    if any(abs(a["prob"] - b["prob"]) > tol for a, b in zip(ms_top, lite_top)):
        return False
    probs = [t["prob"] for t in ms_top]
    for i, (a, b) in enumerate(zip(ms_top, lite_top)):
        near = [p for j, p in enumerate(probs) if j != i and abs(p - probs[i]) <= 2 * tol]
        if a["index"] != b["index"] and not near:
            return False
    return True


@pytest.mark.slow
@pytest.mark.needs_mindspore
@pytest.mark.parametrize("arch", architectures.names())
def test_every_variant_on_the_box_equals_mindspore(arch, tmp_path, imagenet_files):
    """Every registered variant, seeded random weights in the official layout: the box
    (3.7, Lite, the architecture read from the file) and MindSpore (3.11, train.export)
    give the same top-5 on real photographs."""
    from pth_writer import random_state_dict, save_pth

    interpreter_or_skip(PY311, "mindspore")
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in imagenet_files[:4]:
        shutil.copy(str(f), str(photos / f.name))
    save_pth(random_state_dict(arch, seed=5), tmp_path / (arch + ".pth"))
    (tmp_path / "train.py").write_text(USER_TRAIN_PY)
    lite_rows, _ = _infer(_box_python(), tmp_path, "lite", model=arch + ".pth")
    ms_rows, _ = _infer(PY311, tmp_path, "mindspore", "--backend", "mindspore", model=arch + ".pth")
    lite = dict((r["path"], r["top"]) for r in lite_rows)
    assert sorted(lite) == sorted(r["path"] for r in ms_rows) and len(lite) == 4
    for row in ms_rows:
        assert _same_top5(row["top"], lite[row["path"]], 2e-6), (arch, row["path"], row["top"], lite[row["path"]])
