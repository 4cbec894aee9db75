"""A model's metadata travels inside the model file where the format allows it.

``train.export`` embeds the metadata JSON in an ONNX file's ``metadata_props``; ibnedge
reads it there without the ``onnx`` package (:mod:`ibnedge.onnx_info`), ``ibnedge
convert`` writes it beside the Lite model, and a model with no metadata at all runs on
ImageNet defaults with ONE warning naming the fix. Real files, real runtimes and real
``python -m ...`` processes; the end-to-end case runs both interpreters (export in the
3.11 environment, conversion and Lite in the 3.7 one).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from edge_helpers import PY37, PY311, have, interpreter_or_skip, make_tiny_onnx, run_py
from ibnedge.metadata import ONNX_METADATA_KEY, MetadataError, ModelMetadata, load_for_model, metadata_path
from ibnedge.onnx_info import OnnxFormatError, metadata_props
from ibnedge.results import read_rows

PY = Path(sys.executable)
NAMES = ["class_%s" % c for c in "abcdefghij"]
OTHER_NAMES = ["other_%d" % i for i in range(10)]


def _cli(python, *args, **kw):
    return run_py(python, ["-m", "ibnedge"] + [str(a) for a in args], **kw)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    return proc


def _warnings(proc):
    return [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("ibnedge: warning:")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, imagenet_files):
    root = tmp_path_factory.mktemp("photos")
    for f in imagenet_files[:5]:
        shutil.copy(str(f), str(root / f.name))
    return root


# --------------------------------------------------------------------------- reading ONNX metadata_props


def test_reader_agrees_with_onnx_and_onnx_runtime(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = make_tiny_onnx(tmp_path / "m.onnx", class_names=NAMES, sidecar=False, embedded=True)
    model = onnx.load(str(path))
    extra = model.metadata_props.add()  # a property of someone else's, after ours
    extra.key, extra.value = "author", "Zoë"
    onnx.save(model, str(path))
    props = metadata_props(path)
    assert props == {e.key: e.value for e in onnx.load(str(path)).metadata_props}
    assert set(props) == {ONNX_METADATA_KEY, "author"} and props["author"] == "Zoë"
    assert json.loads(props[ONNX_METADATA_KEY])["class_names"] == NAMES
    if have("onnxruntime"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_modelmeta().custom_metadata_map == props
    assert load_for_model(path).class_names == NAMES and not metadata_path(path).exists()
    assert metadata_props(make_tiny_onnx(tmp_path / "plain.onnx", sidecar=False)) == {}


def test_onnx_built_from_official_weights_carries_its_metadata(tmp_path):
    """ibnedge.onnx_builder (.pth -> ONNX on the edge box) embeds what it writes beside the file."""
    pytest.importorskip("onnx")
    from ibnedge.metadata import read_embedded, read_sidecar
    from ibnedge.onnx_builder import build_from_pth
    from pth_writer import random_state_dict, save_pth

    pth = save_pth(random_state_dict("resnet_ibn_a_tiny", num_classes=7), tmp_path / "tiny-0123abcd.pth")
    built = build_from_pth(pth, input_size=(64, 64))
    embedded = read_embedded(built.path)
    assert embedded is not None and embedded == read_sidecar(built.path) == built.metadata
    assert embedded.preprocess.semantics == "pil" and embedded.source == pth.name
    assert embedded.origin == "official" and json.loads(embedded.to_json())["version"] == 2


def test_reader_agrees_with_onnx_on_an_exported_model(tmp_path):
    """A real model built from weights (graph, initializers, opset, metadata last)."""
    onnx = pytest.importorskip("onnx")
    from ibnedge.onnx_builder import build_from_pth
    from pth_writer import random_state_dict, save_pth

    pth = save_pth(random_state_dict("resnet_ibn_a_tiny", num_classes=10), tmp_path / "tiny-0123abcd.pth")
    built = build_from_pth(pth, input_size=(64, 64))
    expected = {e.key: e.value for e in onnx.load(str(built.path)).metadata_props}
    assert metadata_props(built.path) == expected and set(expected) == {ONNX_METADATA_KEY}


def _varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _entry(key, value):
    body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
    return b"\x72" + _varint(len(body)) + body  # ModelProto.metadata_props (14)


def test_metadata_is_read_without_reading_the_graph(tmp_path):
    """metadata_props read the whole file (the weights: 100 MB for resnet50) to find a few
    hundred bytes after the graph. Here a 64 MiB graph (a sparse hole of zeros) before the
    entry: reading it would allocate 64 MiB; skipping it, a few kB."""
    import tracemalloc

    graph_size = 64 << 20
    path = tmp_path / "big.onnx"
    with open(str(path), "wb") as f:
        f.write(b"\x08\x06")  # ir_version 6
        f.write(b"\x3a" + _varint(graph_size))  # ModelProto.graph (7)
        f.seek(graph_size, os.SEEK_CUR)
        f.write(_entry(b"author", "Zoë".encode("utf-8")))
    tracemalloc.start()
    try:
        props = metadata_props(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert props == {"author": "Zoë"}
    assert peak < 1 << 20, "metadata_props allocated %d bytes for a %d-byte file" % (peak, path.stat().st_size)


@pytest.mark.parametrize("data, why", [
    (b"\x3a" + _varint(1 << 40) + b"\0" * 16, "truncated field 7"),  # a graph longer than the file
    (b"\x08\x06" + _entry(b"k", b"v")[:-1], "truncated field 14"),  # the last entry torn
    (b"\x08", "truncated field 1"),  # a varint field without its value
    (b"\x08\x06\xf2", "truncated varint"),  # a key torn after its first byte
    (b"\x72\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "varint too long"),
    (b"\x0b", "unsupported wire type 3"),
])
def test_a_hostile_onnx_file_is_one_clear_error(tmp_path, data, why):
    path = tmp_path / "hostile.onnx"
    path.write_bytes(data)
    with pytest.raises(OnnxFormatError, match="hostile.onnx is not a readable ONNX model \\(%s\\)" % why):
        metadata_props(path)
    proc = _cli(PY, "convert", path, "--to", "lite", "--output", tmp_path / "out.mindir")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("ibnedge convert: error: %s is not a readable ONNX model (%s)" % (path, why)), err


# A sidecar as ibnedge wrote it before the record was versioned 2 (no "origin"), byte for byte.
_VERSION_1_SIDECAR = {
    "version": 1, "arch": "tiny_conv", "num_classes": 10, "class_names": None, "input_shape": [-1, 3, 32, 32],
    "preprocess": {"resize": 36, "crop": [32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "semantics": "mindspore"},
    "source": "run.ckpt",
}


def test_a_version_1_sidecar_still_loads_and_is_written_back_as_version_2(tmp_path, photos):
    """Models exported before version 2 keep working: their sidecar and their embedded
    record load (origin unknown, semantics as written), and ibnedge classifies with them."""
    from ibnedge.metadata import METADATA_VERSION, ModelMetadata

    model = make_tiny_onnx(tmp_path / "old.onnx", sidecar=False)
    metadata_path(model).write_text(json.dumps(_VERSION_1_SIDECAR))
    meta = load_for_model(model)
    assert (meta.arch, meta.origin, meta.preprocess.semantics, meta.preprocess.crop) == (
        "tiny_conv", "", "mindspore", (32, 32))
    assert json.loads(meta.to_json())["version"] == METADATA_VERSION == 2
    assert ModelMetadata.from_json(meta.to_json(), "round trip") == meta
    if have("onnxruntime"):
        proc = _ok(_cli(PY, "infer", photos, "--model", model, "--backend", "onnx", "--output", tmp_path / "r.jsonl"))
        assert _warnings(proc) == [] and "mindspore preprocessing" in proc.stderr.decode()
    newer = dict(_VERSION_1_SIDECAR, version=3)
    metadata_path(model).write_text(json.dumps(newer))
    with pytest.raises(MetadataError, match="version 3 is newer than this ibnedge understands"):
        load_for_model(model)


def test_the_origin_decides_the_semantics_once():
    from ibnedge.metadata import ORIGIN_SEMANTICS, ModelMetadata

    assert dict(ORIGIN_SEMANTICS) == {"official": "pil", "trained": "mindspore", "random-init": "mindspore"}
    for origin, semantics in ORIGIN_SEMANTICS.items():
        meta = ModelMetadata.describe("resnet50_ibn_a", 1000, origin=origin, source="x")
        assert (meta.origin, meta.preprocess.semantics, meta.input_shape) == (origin, semantics, (-1, 3, 224, 224))
    official = ModelMetadata.official("resnet50_ibn_a", 1000, "x.pth", input_size=(256, 128))
    assert official == ModelMetadata.describe("resnet50_ibn_a", 1000, origin="official", source="x.pth",
                                              crop=(256, 128))
    with pytest.raises(ValueError, match="unknown origin 'torchvision'"):
        ModelMetadata.describe("resnet50_ibn_a", 1000, origin="torchvision", source="x")
    moved = ModelMetadata.describe("resnet50_ibn_a", 1000, origin="official", source="x").with_input(
        crop=(256, 128), batch=8)
    assert (moved.input_shape, moved.preprocess.crop, moved.preprocess.semantics) == ((8, 3, 256, 128), (256, 128),
                                                                                      "pil")


def test_unreadable_onnx_is_a_metadata_error_naming_the_file(tmp_path):
    path = make_tiny_onnx(tmp_path / "m.onnx", sidecar=False, embedded=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 40])  # the metadata entry at the end is torn
    with pytest.raises(OnnxFormatError, match="truncated"):
        metadata_props(cut)
    with pytest.raises(MetadataError, match="cut.onnx is not a readable ONNX model"):
        load_for_model(cut)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x07" * 64)  # wire type 7 does not exist
    with pytest.raises(MetadataError, match="garbage.onnx is not a readable ONNX model"):
        load_for_model(garbage)


# --------------------------------------------------------------------------- which metadata ibnedge uses


def _tiny_for_this_interpreter(tmp_path: Path, **kw) -> Path:
    """The tiny classifier in the format this interpreter's runtime reads: Lite where Lite is
    (converted with ``ibnedge convert``), else ONNX for ONNX Runtime."""
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", **kw)
    if not have("mindspore_lite"):
        if not have("onnxruntime"):
            pytest.skip("neither mindspore_lite nor onnxruntime is installed")
        return onnx_path
    proc = _ok(_cli(PY, "convert", onnx_path, "--to", "lite"))
    if not kw.get("sidecar", True) and not kw.get("embedded", False):
        # Converting a model without metadata says so, once: the Lite model will lack it too.
        assert len(_warnings(proc)) == 1 and str(onnx_path) in _warnings(proc)[0]
    return tmp_path / "tiny_lite.mindir"


def test_a_model_without_metadata_warns_once_naming_the_fix(tmp_path, photos):
    model = _tiny_for_this_interpreter(tmp_path, sidecar=False)
    proc = _ok(_cli(PY, "infer", photos, "--model", model, "--batch", "1", "--output", tmp_path / "r.jsonl"))
    warnings = _warnings(proc)
    assert len(warnings) == 1, proc.stderr.decode()  # once, not per batch (5 batches here)
    for words in (str(model), "has no metadata", "pil preprocessing", "ImageNet class names",
                  "python -m train.export", metadata_path(model).name):
        assert words in warnings[0], (words, warnings[0])
    rows = read_rows(tmp_path / "r.jsonl")
    assert len(rows) == 5 and all(t["label"].startswith("class_") for r in rows for t in r["top"])


def test_a_model_with_metadata_runs_without_a_warning(tmp_path, photos):
    model = _tiny_for_this_interpreter(tmp_path, class_names=NAMES, semantics="mindspore", sidecar=False,
                                       embedded=True)
    proc = _ok(_cli(PY, "infer", photos, "--model", model, "--output", tmp_path / "r.jsonl"))
    assert _warnings(proc) == [] and "mindspore preprocessing" in proc.stderr.decode()
    assert all(t["label"] in NAMES for r in read_rows(tmp_path / "r.jsonl") for t in r["top"])


def test_embedded_metadata_wins_over_a_differing_sidecar(tmp_path, photos):
    pytest.importorskip("onnxruntime")
    model = make_tiny_onnx(tmp_path / "m.onnx", class_names=NAMES, embedded=True, sidecar=False)
    stale = make_tiny_onnx(tmp_path / "stale.onnx", class_names=OTHER_NAMES, semantics="fast")
    os.replace(str(metadata_path(stale)), str(metadata_path(model)))  # another export's leftover
    proc = _ok(_cli(PY, "infer", photos, "--model", model, "--backend", "onnx", "--output", tmp_path / "r.jsonl"))
    warnings = _warnings(proc)
    assert len(warnings) == 1 and "differs from %s" % metadata_path(model) in warnings[0]
    assert "pil preprocessing" in proc.stderr.decode()
    assert all(t["label"] in NAMES for r in read_rows(tmp_path / "r.jsonl") for t in r["top"])


# --------------------------------------------------------------------------- train.export -> convert -> infer


@pytest.mark.needs_mindspore
@pytest.mark.needs_lite
@pytest.mark.skipif(sys.version_info < (3, 9), reason="driven from the Python 3.11 suite (MindSpore exports)")
def test_a_model_trained_here_keeps_mindspore_semantics_through_onnx_and_lite(tmp_path, photos):
    """A checkpoint as ``python -m train`` writes it (mindspore semantics, its own class names)
    exported to ONNX, its sidecar deleted, converted for Lite: both runtimes classify with
    the embedded semantics and names, and with exactly what ``--preprocess mindspore`` gives."""
    ms = pytest.importorskip("mindspore")
    interpreter_or_skip(PY37, "mindspore_lite")
    from train.checkpoint import save_run_checkpoint
    from train.models import create_model
    from train_helpers import CLASSES, randomise_norms, run_module

    ms.set_seed(5)
    net = randomise_norms(create_model("resnet_ibn_a_tiny", num_classes=3), seed=5)
    info = ModelMetadata.describe("resnet_ibn_a_tiny", 3, origin="trained", source="run", crop=64, resize=73,
                                  class_names=list(CLASSES))
    ckpt = save_run_checkpoint(net, tmp_path / "run.ckpt", info, epoch=1, step_in_epoch=0)
    onnx_path = tmp_path / "tiny.onnx"
    run_module("train.export", ["--device", "CPU", "--checkpoint", ckpt, "--format", "ONNX", "--output", onnx_path])
    metadata_path(onnx_path).unlink()  # the model file alone, as copied to an edge box

    proc = _ok(_cli(PY37, "convert", onnx_path, "--to", "lite"))
    assert _warnings(proc) == []
    lite_path = tmp_path / "tiny_lite.mindir"
    lite_meta = json.loads(metadata_path(lite_path).read_text())
    assert lite_meta["preprocess"]["semantics"] == "mindspore" and lite_meta["class_names"] == list(CLASSES)

    def infer(python, model, backend, name, *extra):
        out = tmp_path / (name + ".jsonl")
        proc = _ok(_cli(python, "infer", photos, "--model", model, "--backend", backend, "--output", out,
                        "--topk", "3", *extra))
        return proc, read_rows(out)

    for python, model, backend in ((PY311, onnx_path, "onnx"), (PY37, lite_path, "lite")):
        proc, rows = infer(python, model, backend, backend)
        assert _warnings(proc) == [], proc.stderr.decode()
        assert "backend %s, mindspore preprocessing" % backend in proc.stderr.decode()
        assert len(rows) == 5 and all(t["label"] in CLASSES for r in rows for t in r["top"])
        _, forced = infer(python, model, backend, backend + "_mindspore", "--preprocess", "mindspore")
        assert rows == forced
        _, pil = infer(python, model, backend, backend + "_pil", "--preprocess", "pil")
        assert pil != rows  # the semantics matter for these photographs: the embedded one was used
