"""Several devices at once: one backend per device (the four chips of an Atlas 300I card),
fed by one preprocessing stream, rows in input order.

No Ascend chip is here; the dispatching is the same for any backend, so two real Lite
instances (Python 3.7) and two real ONNX Runtime instances on the CPU stand in for chips.
A device that fails is a real backend that was closed: its run raises, its batch goes to
the other device, and the failure is reported with the device's id.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_helpers import have, make_tiny_onnx, run_py
from ibnedge import classifier
from ibnedge.backends import BackendError
from ibnedge.classifier import Classifier, device_id_list
from ibnedge.results import read_rows

PY = Path(sys.executable)
BACKENDS = [
    pytest.param("lite", marks=pytest.mark.skipif(not have("mindspore_lite"), reason="mindspore_lite not installed")),
    pytest.param("onnx", marks=pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime not installed")),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    onnx_path = make_tiny_onnx(d / "tiny.onnx", class_names=["class_%d" % i for i in range(10)])
    out = {"onnx": onnx_path}
    if have("mindspore_lite"):
        from ibnedge.convert import convert_to_lite

        out["lite"] = convert_to_lite(onnx_path)
    return out


@pytest.fixture(scope="module")
def items(imagenet_files, bad_cases):
    """Photos (paths, bytes, an array) with bad files among them: 40 items."""
    from PIL import Image

    photos = list(imagenet_files)
    bad = [c.path for c in bad_cases.values() if c.expected and not c.may_decode and c.path.is_file()][:4]
    out = []
    for i in range(36):
        photo = photos[i % len(photos)]
        out.append(photo.read_bytes() if i % 5 == 1 else str(photo))
    out[7] = np.asarray(Image.open(str(photos[0])).convert("RGB"))
    return out + [str(p) for p in bad]


def _rows(clf, items):
    return [p.to_dict() for p in clf.predict_iter(items, topk=3)]


@contextlib.contextmanager
def _classifiers(model, backend, *device_ids, batch=1):
    made = []
    try:
        for ids in device_ids:
            made.append(Classifier(model=model, backend=backend, device_id=ids, batch=batch, threads=1))
        yield made
    finally:
        for clf in made:
            clf.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_devices_give_the_rows_of_one_in_input_order(models, items, backend):
    with _classifiers(models[backend], backend, 0, [0, 1]) as (one, two):
        expected = _rows(one, items)
        assert len(expected) == len(items) and sum("error" in r for r in expected) >= 4
        assert _rows(two, items) == expected
        assert len(two.backends) == 2 and two.backends[0] is not two.backends[1]
        # The 40 batches (one item each; bad files are decoded, and fail, in the engine) went to both.
        assert sum(two.batches_per_device.values()) == len(items)
        assert all(n > 0 for n in two.batches_per_device.values()), two.batches_per_device
        assert two.device_failures == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_device_is_named_and_no_row_is_lost_or_repeated(models, items, backend):
    with _classifiers(models[backend], backend, 0, [0, 3]) as (one, two):
        expected = _rows(one, items)
        two.backends[1].close()  # device 3 fails from its first batch on
        assert _rows(two, items) == expected
        assert [i for i, _ in two.device_failures] == [3]
        assert "was closed" in two.device_failures[0][1]
        assert two.batches_per_device[3] == 0 and two.batches_per_device[0] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_when_every_device_fails_the_error_names_each(models, items, backend):
    clf = Classifier(model=models[backend], backend=backend, device_id=[0, 1], batch=2, threads=1)
    for b in clf.backends:
        b.close()
    with pytest.raises(BackendError, match=r"every device failed: cpu device \d: .*was closed.*; cpu device \d: "):
        _rows(clf, items)
    assert sorted(i for i, _ in clf.device_failures) == [0, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_a_pipeline_whose_input_never_comes_returns_and_names_the_stuck_stage(
        models, imagenet_files, backend, monkeypatch, caplog):
    """An input stream that stops delivering (a pipe, a network source) holds the
    preprocessing thread in next() for good: closing the pipeline (the caller stopped
    reading, Ctrl-C) returns after CLOSE_TIMEOUT_S with one warning naming that stage,
    instead of joining the thread for ever. The bound is shortened to keep the test short."""
    monkeypatch.setattr(classifier, "CLOSE_TIMEOUT_S", 0.5)
    never = threading.Event()  # set only to release the thread once the test has its answer

    def stream():
        yield str(imagenet_files[0])
        never.wait()

    closed = threading.Event()
    with _classifiers(models[backend], backend, 0) as (clf,):
        rows = clf.predict_iter(stream(), topk=1)
        assert next(rows).ok
        started = time.monotonic()
        threading.Thread(target=lambda: (rows.close(), closed.set()), daemon=True).start()
        try:
            returned = closed.wait(10)
            elapsed = time.monotonic() - started
        finally:
            never.set()
    assert returned, "close() hung on the blocked preprocessing stage"
    assert 0.5 <= elapsed < 5, elapsed  # the bound, plus scheduling slack on a loaded machine
    assert [r.getMessage() for r in caplog.records if r.name == "ibnedge.classifier"] == [
        "preprocessing (reading the input items) did not stop within 0.5 s of closing the pipeline (blocked in the "
        "input iterator?); left running in the background"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_a_pipeline_waits_for_a_batch_run_slower_than_the_bound(models, imagenet_files, backend, monkeypatch,
                                                                         caplog):
    """A device's batch run always returns, however slow (a first compile, a big batch on a
    CPU): close() waits for it, without a warning, so that the backend is not closed under a
    run still using it. The real run is delayed by 1 s past the 0.5 s bound."""
    monkeypatch.setattr(classifier, "CLOSE_TIMEOUT_S", 0.5)
    runs = []  # (started, ended) of each delayed run
    with _classifiers(models[backend], backend, 0) as (clf,):
        real_run = clf.backends[0].run

        def slow_run(batch):
            started = time.monotonic()
            time.sleep(1.0)
            out = real_run(batch)
            runs.append((started, time.monotonic()))
            return out

        monkeypatch.setattr(clf.backends[0], "run", slow_run)
        rows = clf.predict_iter([str(p) for p in imagenet_files[:8]], topk=1)
        assert next(rows).ok
        rows.close()
        closed = time.monotonic()
    assert runs and all(ended <= closed for _, ended in runs), "close() returned while a batch was running"
    assert not [r for r in caplog.records if r.name == "ibnedge.classifier"]


def test_device_ids_are_checked():
    assert device_id_list(2) == [2] and device_id_list((0, 1, 2, 3)) == [0, 1, 2, 3]
    for bad in ([], [0, 0], [-1], [True], "0,1"):
        with pytest.raises(ValueError, match="device_id"):
            device_id_list(bad)


@pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime not installed")
def test_cli_infer_and_bench_on_two_devices(models, imagenet_files, tmp_path):
    name = "lite" if "lite" in models else "onnx"
    folder = imagenet_files[0].parent
    rows = {}
    for ids in ("0", "0,1"):
        out = tmp_path / ("rows%s.jsonl" % ids.replace(",", ""))
        proc = run_py(PY, ["-m", "ibnedge", "infer", str(folder), "--model", str(models[name]), "--backend", name,
                           "--device-id", ids, "--batch", "2", "--threads", "1", "--output", str(out), "--quiet"])
        assert proc.returncode == 0, proc.stderr.decode()
        rows[ids] = read_rows(out)
    assert rows["0,1"] == rows["0"] and len(rows["0"]) == len(list(folder.iterdir()))

    report = tmp_path / "bench.json"
    proc = run_py(PY, ["-m", "ibnedge", "bench", "--model", str(models[name]), "--backend", name, "--device-id", "0,1",
                       "--batch", "4", "--images", "8", "--repeat", "2", "--threads", "1", "--skip-preprocess",
                       "--corpus", str(folder), "--json", str(report)])
    assert proc.returncode == 0, proc.stderr.decode()
    devices = json.loads(report.read_text())["devices"]
    assert [(r["backend"], r["devices"], r["device_ids"]) for r in devices] == [(name, 1, [0]), (name, 2, [0, 1])]
    assert devices[0]["relative_to_1_device"] == 1.0 and all(r["end_to_end_img_s"] > 0 for r in devices)
    assert "end to end per device count" in proc.stdout.decode()
    bad = run_py(PY, ["-m", "ibnedge", "infer", str(folder), "--device-id", "0,0"])
    assert bad.returncode == 2 and "expected a device index or distinct indices" in bad.stderr.decode()


@pytest.mark.skipif(not have("mindspore"), reason="MindSpore not installed (Python 3.9+ env)")
def test_mindspore_backend_refuses_several_devices(tmp_path):
    """MindSpore picks its device once per process: one backend per device cannot work."""
    import mindspore as ms
    from mindspore import nn

    net = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=True), nn.Flatten(), nn.Dense(4 * 16 * 16, 10)])
    path = tmp_path / "net"
    ms.export(net, ms.Tensor(np.zeros((1, 3, 16, 16), np.float32)), file_name=str(path), file_format="MINDIR")
    with pytest.raises(BackendError, match="the mindspore backend runs on one device per process"):
        Classifier(model=str(path) + ".mindir", backend="mindspore", device_id=[0, 1])


@pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime not installed")
def test_bench_device_table_gives_every_device_work_however_few_images(models, imagenet_files):
    """``--images 2 --batch 2`` on two devices: before, the warm-up was one batch (one device
    warm) and each timed run one batch, so "2 devices" timed one device again."""
    from ibnedge.bench.app import device_table

    made = []

    def make(ids):
        made.append(Classifier(model=models["onnx"], backend="onnx", device_id=list(ids), batch=2, threads=1))
        return made[-1]

    rows = device_table(make, "onnx", [0, 1], list(imagenet_files[:2]), batch=2, repeats=2, log=lambda line: None)
    assert [(r["devices"], r["images"]) for r in rows] == [(1, 8), (2, 8)]
    # Warm-up: one batch per device; then two runs of 8 images in batches of 2.
    assert [sum(c.batches_per_device.values()) for c in made] == [1 + 2 * 4, 2 + 2 * 4]
