"""Static batch sizes and batch profiles, on real converted models.

The Ascend 310 takes static shapes only, so ``ibnedge convert --batch`` builds models that
accept a set of batch sizes, and :meth:`Backend.run` feeds each call the smallest allowed
size that holds it (zero-padded). On CPU each size is a static Lite model of its own
(Lite's CPU runtime ignores Ascend profiles); these tests run those for real and compare
every N from 1 to 20 with the dynamic model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_helpers import have, make_tiny_onnx, tiny_reference
from ibnedge.backends import BackendError, create_backend
from ibnedge.backends.base import plan_chunks
from ibnedge.convert import ConvertError, convert_to_lite, profile_output
from ibnedge.metadata import load_for_model, metadata_path

needs_lite = pytest.mark.skipif(not have("mindspore_lite"), reason="mindspore_lite not installed (Python 3.7 env)")
needs_ort = pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime not installed")
REL = 1e-5


def _rows(n, seed=3):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_plan_chunks_takes_the_smallest_size_that_holds_the_rest():
    assert plan_chunks(9, (1, 8)) == [(8, 8), (1, 1)]
    assert plan_chunks(7, (1, 8)) == [(8, 7)]  # one padded call, not seven
    assert plan_chunks(20, (8, 1, 32)) == [(32, 20)]
    assert plan_chunks(70, (1, 8, 32)) == [(32, 32), (32, 32), (8, 6)]
    assert plan_chunks(5, (4,)) == [(4, 4), (4, 1)]
    for bad in ((0, (1,)), (3, ()), (3, (0, 4))):
        with pytest.raises(ValueError):
            plan_chunks(*bad)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny graph as a dynamic Lite model and as static batch 1, static 8 and profiles 1,8."""
    pytest.importorskip("mindspore_lite")
    d = tmp_path_factory.mktemp("profiles")
    onnx_path = make_tiny_onnx(d / "tiny.onnx")
    return {
        "dynamic": convert_to_lite(onnx_path),
        "b1": convert_to_lite(onnx_path, d / "b1.mindir", batch_sizes=[1]),
        "b8": convert_to_lite(onnx_path, d / "b8.mindir", batch_sizes=[8]),
        "p18": convert_to_lite(onnx_path, d / "p18.mindir", batch_sizes=[8, 1, 8]),
    }


@needs_lite
def test_cpu_profiles_are_static_models_listed_in_the_metadata(converted):
    p18 = converted["p18"]
    assert profile_output(p18, 1).is_file() and not profile_output(p18, 8).exists()
    dep = load_for_model(p18).deployment
    assert dep.device == "cpu" and dep.batch_profiles == (1, 8) and dep.precision == "fp32"
    assert dep.profile_files == {1: "p18.b1.mindir"}
    assert load_for_model(p18).input_shape == (-1, 3, 32, 32)
    assert load_for_model(converted["b8"]).input_shape == (8, 3, 32, 32)
    assert load_for_model(converted["dynamic"]).deployment is None


@needs_lite
@pytest.mark.parametrize("name, sizes", [("b1", (1,)), ("b8", (8,)), ("p18", (1, 8))])
def test_static_and_profile_models_equal_the_dynamic_one_for_every_n(converted, name, sizes):
    dynamic = create_backend("lite", converted["dynamic"], threads=1)
    static = create_backend("lite", converted[name], threads=1)
    assert static.batch_sizes == sizes and dynamic.batch_sizes is None
    x = _rows(20)
    for n in range(1, 21):
        got, want = static.run(x[:n]), dynamic.run(x[:n])
        assert got.shape == (n, 10)
        assert _relative(got, want) <= REL, (name, n)
    np.testing.assert_allclose(static.run(x), tiny_reference(x), rtol=1e-4, atol=1e-4)
    # Never resized: every static Lite model still has the shape it was built with.
    loaded = [static._primary] + list(static._by_batch.values())
    assert sorted(m.bound[0] for m in loaded) == list(sizes)
    assert all(not m.resizable and m.bound[1:] == [3, 32, 32] for m in loaded)


@needs_lite
def test_static_model_keeps_the_logits_of_earlier_chunks(tmp_path):
    """A static batch-4 Lite model fed 9 rows runs three chunks on one Lite model; the
    output tensor's memory is reused by each predict, so the first chunks' logits must be
    copies (before the fix, rows 0-7 came back as copies of the last chunk's)."""
    onnx_path = make_tiny_onnx(tmp_path / "fixed.onnx", batch=4)
    backend = create_backend("lite", convert_to_lite(onnx_path), threads=1)
    assert backend.fixed_batch == 4
    x = _rows(9, seed=5)
    np.testing.assert_allclose(backend.run(x), tiny_reference(x), rtol=1e-4, atol=1e-4)


@needs_lite
def test_a_missing_or_mismatched_profile_file_is_named(converted, tmp_path):
    import shutil

    for f in ("p18.mindir", "p18.json", "p18.b1.mindir"):
        shutil.copy(str(converted["p18"].with_name(f)), str(tmp_path / f))
    (tmp_path / "p18.b1.mindir").unlink()
    with pytest.raises(BackendError, match=r"p18\.b1\.mindir is missing .*convert the model again"):
        create_backend("lite", tmp_path / "p18.mindir")
    # A profile file that holds another batch size than its metadata says.
    shutil.copy(str(converted["b8"]), str(tmp_path / "p18.b1.mindir"))
    with pytest.raises(BackendError, match=r"should take batches of \[1, 3, 32, 32\] but takes \[8, 3, 32, 32\]"):
        create_backend("lite", tmp_path / "p18.mindir")


@needs_lite
def test_metadata_listing_profiles_the_model_lacks_is_refused(converted, tmp_path):
    import shutil

    shutil.copy(str(converted["b8"]), str(tmp_path / "m.mindir"))
    meta = json.loads(metadata_path(converted["b8"]).read_text())
    meta["deployment"]["batch_profiles"] = [4, 8, 16]
    metadata_path(tmp_path / "m.mindir").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match=r"takes batch 8 but its metadata lists batch profiles \[4, 8, 16\]"):
        create_backend("lite", tmp_path / "m.mindir")


@needs_ort
def test_onnx_static_model_uses_the_same_chunking(tmp_path):
    backend = create_backend("onnx", make_tiny_onnx(tmp_path / "s.onnx", batch=8))
    assert backend.batch_sizes == (8,)
    x = _rows(20, seed=7)
    for n in (1, 8, 9, 20):
        np.testing.assert_allclose(backend.run(x[:n]), tiny_reference(x[:n]), rtol=1e-4, atol=1e-4)


def test_closed_backend_refuses_to_run(tmp_path):
    pytest.importorskip("onnxruntime")
    backend = create_backend("onnx", make_tiny_onnx(tmp_path / "d.onnx"))
    backend.close()
    with pytest.raises(BackendError, match="was closed"):
        backend.run(_rows(1))


def test_cpu_batch_sizes_need_onnx_and_metadata_for_several(tmp_path):
    onnx_path = make_tiny_onnx(tmp_path / "t.onnx")
    metadata_path(onnx_path).unlink()
    with pytest.raises(ConvertError, match="several batch sizes are recorded in the model's metadata"):
        convert_to_lite(onnx_path, batch_sizes=[1, 8])
    mindir = tmp_path / "m.mindir"
    mindir.write_bytes(b"\0" * 8)
    with pytest.raises(ConvertError, match="static batch sizes need the model's input name, read from an ONNX file"):
        convert_to_lite(mindir, tmp_path / "out.mindir", batch_sizes=[8])
    with pytest.raises(ConvertError, match="--batch needs positive sizes"):
        convert_to_lite(onnx_path, batch_sizes=[0])
