"""End to end across both environments, on real photographs:

    train (Python 3.11, MindSpore)  -> resnet_ibn_a_tiny exported to MINDIR and ONNX (+ metadata)
    ibnedge convert (Python 3.7)    -> Lite MINDIR
    ibnedge infer --backend mindspore (3.11)   vs   ibnedge infer --backend lite (3.7)

Both runs must give a row for every file, the same errors and the same top-5 classes, and
both backends the same logits on the same preprocessed photographs within a relative 1e-4
(max |difference| / max |logit|). Logits, not the rows' probabilities: a 1000-class random
model puts ~1e-3 on each class, so a 1e-3 tolerance on probabilities passes almost any
top-5. Every step is a subprocess of its own interpreter (``.venv/bin/python``,
``.venv37/bin/python``), so the test runs from the 3.11 suite and is skipped, with the
reason, where either is missing.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap

import numpy as np
import pytest

from edge_helpers import PY37, PY311, interpreter_or_skip, run_py
from ibnedge.classifier import softmax
from ibnedge.results import read_rows
from train_helpers import relative_error

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 9), reason="driven from the Python 3.11 suite (it runs the 3.7 side as a subprocess)"
)

SIZE = 64  # small inputs keep the tiny model fast; preprocessing resizes to 73, crops 64
LOGIT_REL_TOL = 1e-4
PROB_ROUNDING = 1e-6  # rows carry probabilities rounded to 6 decimals

EXPORT = textwrap.dedent(
    """
    import sys
    import mindspore as ms
    from train.models import create_model
    from train.export import export_model
    from ibnedge.metadata import ModelMetadata, PreprocessSpec, save_for_model

    out, size = sys.argv[1], int(sys.argv[2])
    ms.set_seed(0)
    net = create_model("resnet_ibn_a_tiny", num_classes=1000)
    meta = ModelMetadata(arch="resnet_ibn_a_tiny", num_classes=1000, input_shape=(-1, 3, size, size),
                         preprocess=PreprocessSpec(resize=size + size // 7, crop=size, semantics="pil"),
                         source="random-init")
    for fmt, suffix in (("MINDIR", ".mindir"), ("ONNX", ".onnx")):
        path = export_model(net, out + suffix, fmt, input_shape=(1, 3, size, size), dynamic_batch=True)
        save_for_model(meta, path)
    """
)


# The backend's logits for every classifiable file under a directory, through the same
# Classifier (metadata, preprocessing, backend) that ``ibnedge infer`` uses.
LOGITS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ibnedge.classifier import Classifier
    from ibnedge.files import iter_input_files

    model, backend, root, out = sys.argv[1:5]
    clf = Classifier(model=model, backend=backend, threads=2)
    paths = [f.path for f in iter_input_files([root]) if f.error is None]
    batch = clf.preprocessor.run(paths)
    good = [i for i, e in enumerate(batch.errors) if e is None]
    np.savez(out, paths=np.array([paths[i] for i in good]), logits=clf.logits(batch.tensor[good]))
    """
)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    py311 = interpreter_or_skip(PY311, "mindspore")
    py37 = interpreter_or_skip(PY37, "mindspore_lite")
    d = tmp_path_factory.mktemp("e2e")
    script = d / "export.py"
    script.write_text(EXPORT)
    _ok(run_py(py311, [str(script), str(d / "tiny"), str(SIZE)]))
    _ok(run_py(py37, ["-m", "ibnedge", "convert", str(d / "tiny.onnx"), "--to", "lite"]))
    assert (d / "tiny_lite.mindir").is_file() and (d / "tiny_lite.json").is_file()
    return d


@pytest.fixture(scope="module")
def photos(tmp_path_factory, imagenet_files, bad_cases):
    root = tmp_path_factory.mktemp("photos")
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, f in enumerate(imagenet_files[:12]):
        shutil.copy(str(f), str(root / ("nested" if i % 3 == 1 else "nested/deeper" if i % 3 == 2 else "") / f.name))
    for name in ("empty", "truncated", "not_image"):
        case = next((c for c in bad_cases.values() if c.name.startswith(name)), None)
        if case is not None and case.path.is_file():
            shutil.copy(str(case.path), str(root / case.path.name))
    return root


def _logits(python, model, backend, photos, out):
    """{path: logits} of ``backend`` in ``python``'s interpreter (the LOGITS script)."""
    script = out.with_suffix(".py")
    script.write_text(LOGITS)
    _ok(run_py(python, [str(script), str(model), backend, str(photos), str(out)]))
    with np.load(str(out)) as saved:
        return dict(zip(saved["paths"].tolist(), saved["logits"].astype(np.float64)))


def test_mindspore_and_lite_agree_on_real_photographs(exported, photos):
    ms_out, lite_out = exported / "ms.jsonl", exported / "lite.jsonl"
    _ok(run_py(PY311, ["-m", "ibnedge", "infer", str(photos), "--model", str(exported / "tiny.mindir"),
                       "--backend", "mindspore", "--output", str(ms_out), "--batch", "4", "-q"]))
    _ok(run_py(PY37, ["-m", "ibnedge", "infer", str(photos), "--model", str(exported / "tiny_lite.mindir"),
                      "--backend", "lite", "--output", str(lite_out), "--batch", "4", "--threads", "2", "-q"]))
    ms_logits = _logits(PY311, exported / "tiny.mindir", "mindspore", photos, exported / "ms_logits.npz")
    lite_logits = _logits(PY37, exported / "tiny_lite.mindir", "lite", photos, exported / "lite_logits.npz")
    ms_rows = _assert_same_results(photos, read_rows(ms_out), read_rows(lite_out), ms_logits, lite_logits)
    # ImageNet names come from the metadata (1000 classes): real words, not indices.
    assert all(not t["label"].startswith("class_") for r in ms_rows if "top" in r for t in r["top"])


def _assert_same_results(photos, rows, other_rows, logits, other_logits):
    """Both runs have one row per file and the same errors; both backends give the 12 good
    photographs the same logits (relative LOGIT_REL_TOL) and each run's rows are the top-5
    of its own backend's logits; returns ``rows``."""
    files = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in rows) == files == sorted(r["path"] for r in other_rows)
    other_by_path = {r["path"]: r for r in other_rows}
    good = [r["path"] for r in rows if "error" not in r]
    for row in rows:
        if "error" in row:
            assert other_by_path[row["path"]]["error"]["kind"] == row["error"]["kind"]
    assert len(good) == 12 and sorted(good) == sorted(logits) == sorted(other_logits)
    ref = np.stack([logits[p] for p in good])
    error = relative_error(np.stack([other_logits[p] for p in good]), ref)
    assert error <= LOGIT_REL_TOL, "logits differ by %.3g of their range" % error
    for path in good:
        _assert_row_is_top5(next(r for r in rows if r["path"] == path), logits[path])
        _assert_row_is_top5(other_by_path[path], other_logits[path])
    return rows


def _assert_row_is_top5(row, logits):
    """``row`` lists the 5 most likely classes of ``logits``, with their probabilities
    (classes whose logits are within LOGIT_REL_TOL of each other may swap: a near tie)."""
    probs = softmax(logits[None])[0]
    top = [t["index"] for t in row["top"]]
    assert len(top) == 5
    assert [t["prob"] for t in row["top"]] == pytest.approx(probs[top].tolist(), abs=PROB_ROUNDING)
    tie = LOGIT_REL_TOL * np.abs(logits).max()
    ranked = logits[top]
    assert ranked.min() >= np.sort(logits)[-5] - tie, (row, np.argsort(-logits)[:5])
    assert all(ranked[:-1] >= ranked[1:] - tie), (row, ranked)


@pytest.mark.slow
def test_onnx_runtime_agrees_too(exported, photos):
    """The same ONNX file through ONNX Runtime (3.11) against Lite's conversion of it (3.7)."""
    interpreter_or_skip(PY311, "onnxruntime")
    ort_out, lite_out = exported / "ort.jsonl", exported / "lite2.jsonl"
    _ok(run_py(PY311, ["-m", "ibnedge", "infer", str(photos), "--model", str(exported / "tiny.onnx"),
                       "--backend", "onnx", "--output", str(ort_out), "-q"]))
    _ok(run_py(PY37, ["-m", "ibnedge", "infer", str(photos), "--model", str(exported / "tiny_lite.mindir"),
                      "--output", str(lite_out), "-q"]))  # auto picks lite in the 3.7 environment
    ort_logits = _logits(PY311, exported / "tiny.onnx", "onnx", photos, exported / "ort_logits.npz")
    lite_logits = _logits(PY37, exported / "tiny_lite.mindir", "auto", photos, exported / "lite2_logits.npz")
    _assert_same_results(photos, read_rows(ort_out), read_rows(lite_out), ort_logits, lite_logits)


@pytest.mark.slow
def test_checkpoint_exported_on_the_fly(exported, photos, tmp_path):
    """``--model x.ckpt --arch NAME`` with the mindspore backend: exported once, then reused."""
    script = tmp_path / "ckpt.py"
    script.write_text(textwrap.dedent(
        """
        import sys
        import mindspore as ms
        from train.models import create_model
        ms.set_seed(0)
        ms.save_checkpoint(create_model("resnet_ibn_a_tiny", num_classes=1000), sys.argv[1])
        """
    ))
    ckpt = tmp_path / "tiny.ckpt"
    _ok(run_py(PY311, [str(script), str(ckpt)]))
    home = tmp_path / "home"
    env = {"IBNEDGE_HOME": str(home)}
    out = tmp_path / "ckpt.jsonl"
    proc = run_py(PY311, ["-m", "ibnedge", "infer", str(photos), "--model", str(ckpt), "--arch",
                          "resnet_ibn_a_tiny", "--backend", "mindspore", "--output", str(out), "-q"], env=env)
    _ok(proc)
    rows = read_rows(out)
    assert sum(1 for r in rows if "top" in r) == 12
    exports = list((home / "models").glob("tiny-*/tiny_mindspore.mindir"))
    assert len(exports) == 1 and (exports[0].with_suffix(".json")).is_file()
    meta = json.loads(exports[0].with_suffix(".json").read_text())
    assert meta["arch"] == "resnet_ibn_a_tiny" and meta["input_shape"][0] == -1
