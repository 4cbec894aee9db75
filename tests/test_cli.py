"""The ``ibnedge`` command end to end on real files, real models and real subprocesses.

The model is the tiny ONNX conv classifier of ``edge_helpers`` (a real graph): ONNX
Runtime runs it where onnxruntime is installed, MindSpore Lite runs its converted MINDIR
where Lite is (the Python 3.7 environment). The full-size flows (resnet IBN exported by
train, MindSpore vs Lite) are in test_e2e_lite.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_helpers import have, make_tiny_onnx, run_py, subprocess_env
from ibnedge.cli import main
from ibnedge.results import read_rows

PY = Path(sys.executable)
NAMES = ["class_%s" % c for c in "abcdefghij"]


def _cli(*args, **kw):
    return run_py(PY, ["-m", "ibnedge"] + [str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny classifier in the format this interpreter's preferred backend reads."""
    d = tmp_path_factory.mktemp("model")
    onnx_path = make_tiny_onnx(d / "tiny.onnx", num_classes=10, size=32, class_names=NAMES)
    if have("mindspore_lite"):
        from ibnedge.convert import convert_to_lite

        return convert_to_lite(onnx_path)
    if have("onnxruntime"):
        return onnx_path
    pytest.skip("neither mindspore_lite nor onnxruntime is installed")


# --------------------------------------------------------------------------- help and flags


@pytest.mark.parametrize("command", [[], ["infer"], ["bench"], ["convert"], ["doctor"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ibnedge")
    for flag in {"infer": ["--model", "--backend", "--resume", "--preprocess", "--device-id", "--topk"],
                 "bench": ["--batch", "--json", "--plot", "--device-id"],
                 "convert": ["--optimize", "--fp16", "--device", "--batch", "--soc", "--precision", "--config-only"],
                 "doctor": ["--model", "--device", "--json"]}.get(
                     (command or ["-"])[0], ["infer", "bench", "convert", "doctor"]):
        assert flag in out


@pytest.mark.parametrize("argv, message", [
    (["infer", "x.jpg", "--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
    (["infer", "x.jpg", "--backend", "tensorrt"], "argument --backend: invalid choice: 'tensorrt'"),
    (["infer", "x.jpg", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["infer", "x.jpg", "--resume"], "--resume needs --output FILE"),
    (["infer", "x.jpg", "--model", "/nonexistent/m.onnx"], "model file not found: /nonexistent/m.onnx"),
    # checked before the model loads: the model here does not even exist
    (["infer", "x.jpg", "--model", "/nonexistent/m.onnx", "--output", "r.txt"], "use a .jsonl or .csv file name"),
    (["bench", "--batch", "1,x"], "expected comma-separated positive integers"),
    (["bench", "--backend", "lite,cuda"], "unknown 'cuda'"),
    (["convert", "m.onnx"], "the following arguments are required: --to"),
    (["convert", "/nonexistent.onnx", "--to", "lite"], "model file not found"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_flags_one_line_exit_2(argv, message, tmp_path):
    proc = _cli(*argv, cwd=str(tmp_path))
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["infer", "x.jpg", "--model", "/nonexistent/m.onnx"], "ibnedge infer: error: model file not found"),
    (["convert", "/nonexistent.onnx", "--to", "lite"], "ibnedge convert: error: model file not found"),
    (["bench", "--corpus", "/nonexistent", "--images", "1"], "ibnedge bench: error: --corpus /nonexistent is not"),
])
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_adds_the_traceback_to_a_user_error(argv, message, how, tmp_path):
    """--debug or IBNEDGE_DEBUG=1: the same one line (exit 2), the traceback above it."""
    proc = _cli(*(argv + (["--debug"] if how == "flag" else [])), cwd=str(tmp_path),
                env={"IBNEDGE_DEBUG": "1"} if how == "environment" else {"IBNEDGE_DEBUG": ""})
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, "\n".join(err)
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith(message), "\n".join(err)


_PLANTED_BUG = """
import sys
import ibnedge.classifier


def planted(*args, **kwargs):
    raise {error}("planted bug")


setattr({target}, "{name}", planted)
from ibnedge.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where, error, target, name", [
    ("setting up", "ValueError", "ibnedge.classifier.Classifier", "_resolve_spec"),
    ("mid-run", "ValueError", "ibnedge.classifier", "softmax"),
    ("mid-run", "OSError", "ibnedge.classifier", "softmax"),
])
def test_a_bug_keeps_its_traceback(where, error, target, name, model, imagenet_files, tmp_path):
    """An exception that is no user error (here a bug planted in a real run) is not turned
    into a one-line exit 2 that looks like bad input: Python's traceback, exit 1."""
    script = _PLANTED_BUG.format(error=error, target=target, name=name)
    out = tmp_path / "rows.jsonl"
    proc = run_py(PY, ["-c", script, "infer", str(imagenet_files[0]), "--model", str(model), "--output", str(out)])
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback (most recent call last):" in err and err.strip().endswith("%s: planted bug" % error), err
    assert "ibnedge infer: error" not in err


def test_non_utf8_file_names_get_rows_and_resume(imagenet_files, model, tmp_path):
    """POSIX names are bytes: one that is not UTF-8 is still a row (JSONL escapes it, CSV
    keeps its bytes, the table shows it escaped), and --resume recognises it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    os.link(str(imagenet_files[0]), os.path.join(os.fsencode(str(photos)), b"caf\xe9.jpg"))
    os.link(str(imagenet_files[1]), str(photos / "plain.jpg"))
    names = sorted(os.listdir(str(photos)))  # str, the odd byte as a lone surrogate
    strict = {"PYTHONIOENCODING": "utf-8:strict"}  # as on a UTF-8 terminal
    for out in ("rows.jsonl", "rows.csv"):
        proc = _cli("infer", "photos", "--model", model, "--output", out, cwd=str(tmp_path), env=strict)
        assert proc.returncode == 0 and "2 files, 0 errors" in proc.stderr.decode(), proc.stderr.decode()
        proc = _cli("infer", "./photos", "--model", model, "--output", out, "--resume", cwd=str(tmp_path), env=strict)
        assert "0 files, 0 errors, 2 already done" in proc.stderr.decode(), proc.stderr.decode()
    assert sorted(os.path.basename(r["path"]) for r in read_rows(tmp_path / "rows.jsonl")) == names
    assert b"photos/caf\xe9.jpg," in (tmp_path / "rows.csv").read_bytes()
    proc = _cli("infer", "photos", "--model", model, cwd=str(tmp_path), env=strict)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(line.split()[0] for line in proc.stdout.decode().splitlines()) == [
        "photos/caf\\udce9.jpg", "photos/plain.jpg"]


def test_output_problems_are_found_before_the_model_loads(tmp_path):
    """A --resume file that is not ours is refused before any model is loaded (a default
    model may mean a download and an export), and is left as it was."""
    results = tmp_path / "results.jsonl"
    results.write_text("this is not a result row\n")
    proc = _cli("infer", tmp_path, "--model", tmp_path / "missing.onnx", "--output", results, "--resume")
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1
    assert "results.jsonl line 1 is not an ibnedge result row" in err[0]
    assert results.read_text() == "this is not a result row\n"


def test_backend_list_names_each_backend_once():
    from ibnedge.cli import _name_list

    assert _name_list(("lite", "onnx", "mindspore"))("onnx, lite,onnx") == ["onnx", "lite"]


def test_a_closed_stdout_ends_infer_quietly(tmp_path, model, imagenet_files):
    """`ibnedge infer dir | head -1`: the reader going away is not an error."""
    import shutil

    many = tmp_path / "many"
    many.mkdir()
    for i in range(1500):  # rows well beyond a pipe's buffer, so writes hit the closed pipe
        shutil.copyfile(str(imagenet_files[0]), str(many / ("%04d.jpg" % i)))
    proc = subprocess.Popen([str(PY), "-m", "ibnedge", "infer", str(many), "--model", str(model), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    first = proc.stdout.readline()
    proc.stdout.close()  # like head -1
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert first and "error" not in err.lower() and "Traceback" not in err, err


def test_setup_failure_leaves_an_earlier_output_file_alone(tmp_path):
    previous = tmp_path / "results.jsonl"
    previous.write_text('{"path": "a.jpg", "top": []}\n')
    proc = _cli("infer", "x.jpg", "--model", "/nonexistent/m.onnx", "--output", previous, cwd=str(tmp_path))
    assert proc.returncode == 2 and "model file not found" in proc.stderr.decode()
    assert previous.read_text() == '{"path": "a.jpg", "top": []}\n'


def test_convert_cli_carries_metadata(tmp_path):
    pytest.importorskip("mindspore_lite")
    src = make_tiny_onnx(tmp_path / "net.onnx", class_names=NAMES)
    proc = _cli("convert", src, "--to", "lite", "--optimize", "none", "--fp16")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""  # the converter's banner stays off stdout
    out = tmp_path / "net_lite.mindir"
    assert out.is_file() and (tmp_path / "net_lite.json").is_file()
    assert json.loads((tmp_path / "net_lite.json").read_text())["class_names"] == NAMES


# --------------------------------------------------------------------------- infer


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, imagenet_files, bad_cases):
    """Good photos, the engine's bad-input corpus, nested folders and non-image files."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "good" / "nested").mkdir(parents=True)
    for i, f in enumerate(imagenet_files[:6]):
        dest = root / "good" / ("nested" if i % 2 else "") / f.name
        shutil.copy(str(f), str(dest))
    (root / "bad").mkdir()
    expected = {}
    for name, case in bad_cases.items():
        if not case.path.is_file():  # e.g. the unreadable-path case has no file to copy
            continue
        dest = root / "bad" / case.path.name
        shutil.copy(str(case.path), str(dest))
        expected[str(dest)] = case
    (root / "README.txt").write_text("not a photo\n")
    (root / "good" / "nested" / "labels.csv").write_text("a,b\n")
    return root, expected


def test_infer_mixed_directory_one_row_per_file(mixed_dir, model, tmp_path):
    root, bad = mixed_dir
    out = tmp_path / "rows.jsonl"
    proc = _cli("infer", root, "--model", model, "--output", out, "--batch", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr.decode()
    rows = read_rows(out)
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in rows) == files  # every file exactly once
    by_path = {r["path"]: r for r in rows}
    for p in files:
        row = by_path[p]
        if "/good/" in p and p.endswith(".jpg"):
            assert "top" in row and len(row["top"]) == 5, row
            assert row["top"][0]["label"] in NAMES
            assert row["top"][0]["prob"] >= row["top"][1]["prob"]
    assert by_path[str(root / "README.txt")]["error"]["kind"] == "not_image"
    assert by_path[str(root / "good" / "nested" / "labels.csv")]["error"]["kind"] == "not_image"
    for path, case in bad.items():
        kind = by_path[path]["error"]["kind"] if "error" in by_path[path] else None
        assert case.accepts(kind), "%s (%s): got %s, expected %s" % (case.name, path, kind, case.expected)


def test_infer_table_and_summary(mixed_dir, model):
    root, _ = mixed_dir
    proc = _cli("infer", root / "good", "--model", model, "--topk", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 7  # 6 photos + labels.csv
    assert any("ERROR not_image" in line for line in lines)
    assert any("%" in line and "class_" in line for line in lines)
    assert "7 files, 1 errors" in proc.stderr.decode()


def test_infer_csv_output(mixed_dir, model, tmp_path):
    root, _ = mixed_dir
    out = tmp_path / "rows.csv"
    proc = _cli("infer", root / "good", "--model", model, "--output", out, "--topk", "3", "-q")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = out.read_text().splitlines()
    assert lines[0] == "path,error_kind,error_message,label_1,index_1,prob_1,label_2,index_2,prob_2,label_3,index_3,prob_3"
    assert len(lines) == 1 + 7


def test_kill_and_resume_gives_every_file_once(imagenet_files, model, tmp_path):
    photos = tmp_path / "photos"
    for d in range(8):  # 8 x 32 distinct paths (hard links: no copies of the bytes)
        (photos / ("d%d" % d)).mkdir(parents=True)
        for f in imagenet_files:
            os.link(str(f), str(photos / ("d%d" % d) / f.name))
    total = sum(1 for _ in photos.rglob("*.jpg"))

    reference = tmp_path / "reference.jsonl"
    proc = _cli("infer", photos, "--model", model, "--output", reference, "--batch", "4", "-q")
    assert proc.returncode == 0, proc.stderr.decode()

    out = tmp_path / "killed.jsonl"
    child = subprocess.Popen(
        [str(PY), "-m", "ibnedge", "infer", str(photos), "--model", str(model), "--output", str(out),
         "--batch", "1", "--threads", "1", "-q"],
        cwd="/", env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    rows_before_kill = 0
    while time.monotonic() < deadline and child.poll() is None:
        if out.exists():
            rows_before_kill = out.read_bytes().count(b"\n")
            if rows_before_kill >= 20:
                break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 20 <= rows_before_kill < total

    proc = _cli("infer", photos, "--model", model, "--output", out, "--resume", "--batch", "4")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "already done" in proc.stderr.decode()
    resumed = read_rows(out)
    paths = [r["path"] for r in resumed]
    assert len(paths) == len(set(paths)) == total  # every file exactly once
    expected = {r["path"]: r for r in read_rows(reference)}
    for row in resumed:
        ref = expected[row["path"]]
        assert [t["label"] for t in row["top"]] == [t["label"] for t in ref["top"]]
        for a, b in zip(row["top"], ref["top"]):
            assert a["prob"] == pytest.approx(b["prob"], abs=1e-5)

    # A second resume has nothing left to do and adds nothing.
    proc = _cli("infer", photos, "--model", model, "--output", out, "--resume")
    assert proc.returncode == 0 and len(read_rows(out)) == total
    assert "0 files, 0 errors, %d already done" % total in proc.stderr.decode()


def test_resume_under_another_spelling_of_the_inputs(imagenet_files, model, tmp_path):
    """`ibnedge infer imgs`, killed, then `ibnedge infer ./imgs --resume` (or imgs/, the
    absolute path, a link to the folder, other/../imgs): the same files, none done twice."""
    (tmp_path / "imgs" / "nested").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    for i, f in enumerate(imagenet_files[:6]):
        os.link(str(f), str(tmp_path / "imgs" / ("nested" if i % 2 else "") / f.name))
    os.symlink(str(tmp_path / "imgs"), str(tmp_path / "link"))
    out = "rows.jsonl"
    common = ("--model", model, "--output", out, "--batch", "2")
    proc = _cli("infer", "imgs", *common, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr.decode()
    full = read_rows(tmp_path / out)
    assert len(full) == 6 and all(r["path"].startswith("imgs/") for r in full)

    # A run killed after three rows, resumed under another spelling: three more rows, spelled as named now.
    (tmp_path / out).write_text("".join(json.dumps(r) + "\n" for r in full[:3]))
    proc = _cli("infer", "./imgs", *common, "--resume", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "3 files, 0 errors, 3 already done" in proc.stderr.decode()
    rows = read_rows(tmp_path / out)
    assert [r["path"] for r in rows[3:]] == ["./" + r["path"] for r in full[3:]]
    for spelling in ("imgs/", str(tmp_path / "imgs"), "link", "other/../imgs", ".//imgs//"):
        proc = _cli("infer", spelling, *common, "--resume", cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr.decode()
        assert "0 files, 0 errors, 6 already done" in proc.stderr.decode(), spelling
    assert read_rows(tmp_path / out) == rows


def test_classifier_api_arrays_bytes_and_paths(imagenet_files, model):
    import numpy as np

    from ibnedge.classifier import Classifier

    clf = Classifier(model=model, batch=3, threads=1)
    photo = imagenet_files[0]
    from PIL import Image

    rgb = np.asarray(Image.open(str(photo)).convert("RGB"))
    items = [str(photo), photo.read_bytes(), rgb, b"definitely not an image", photo]
    preds = clf.predict(items, topk=3)
    assert [p.source for p in preds] == [str(photo), "bytes[1]", "array[2]", "bytes[3]", str(photo)]
    assert preds[0].ok and preds[1].ok and preds[2].ok and preds[4].ok
    assert preds[3].error[0] == "not_image"
    assert preds[0].labels == preds[1].labels == preds[4].labels
    assert preds[0].probs == pytest.approx(preds[1].probs, abs=1e-6)
    assert len(preds[0].labels) == 3 and preds[0].labels[0] in NAMES
    assert preds[0].probs == sorted(preds[0].probs, reverse=True)
    # Pipelined and unpipelined agree: one batch at a time through logits().
    tensor = clf.preprocessor.run([str(photo)]).tensor
    from ibnedge.classifier import softmax

    p = softmax(clf.logits(tensor))[0]
    assert preds[0].probs[0] == pytest.approx(float(p.max()), abs=1e-6)
    assert preds[0].indices[0] == int(p.argmax())
    # One item given alone (a path, an InputFile, an RGB or a gray image), and an (N, H, W, 3) stack.
    from ibnedge.files import InputFile

    assert [q.source for q in clf.predict(str(photo))] == [str(photo)]
    assert [q.source for q in clf.predict(InputFile(str(photo)))] == [str(photo)]
    assert [q.source for q in clf.predict(rgb)] == ["array[0]"]
    gray = clf.predict(np.ascontiguousarray(rgb[:, :, 1]))
    assert [q.source for q in gray] == ["array[0]"] and gray[0].ok
    stack = np.stack([rgb, rgb])
    assert [q.labels for q in clf.predict(stack, topk=3)] == [preds[2].labels] * 2


def _eoi_inside_the_scan(jpeg: bytes) -> bytes:
    """``jpeg`` with an end-of-image marker halfway through its scan: libjpeg greys the rest."""
    import struct

    sos = jpeg.find(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]
    pos = (start + len(jpeg)) // 2
    return jpeg[:pos] + b"\xff\xd9" + jpeg[pos + 2:]


def test_infer_accept_damaged_and_max_pixels(imagenet_files, model, tmp_path):
    """A damaged JPEG is a row naming --accept-damaged, classified with it; --max-pixels caps
    the pixels (the 500x375 photo is refused one pixel under its size)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    good = imagenet_files[0].read_bytes()
    (photos / "good.jpg").write_bytes(good)
    (photos / "damaged.jpg").write_bytes(_eoi_inside_the_scan(good))
    runs = {}
    for name, flags in [("default", []), ("accept", ["--accept-damaged"]), ("capped", ["--max-pixels", "187499"])]:
        out = tmp_path / (name + ".jsonl")
        assert main(["infer", str(photos), "--model", str(model), "--output", str(out), "-q"] + flags) == 0
        runs[name] = {Path(r["path"]).name: r for r in read_rows(out)}
    error = runs["default"]["damaged.jpg"]["error"]
    assert error["kind"] == "corrupt" and "--accept-damaged" in error["message"], error
    assert "premature end of data segment" in error["message"]
    assert "top" in runs["default"]["good.jpg"]
    assert "top" in runs["accept"]["damaged.jpg"] and "top" in runs["accept"]["good.jpg"]
    capped = runs["capped"]["good.jpg"]["error"]
    assert capped["kind"] == "too_large" and "--max-pixels" in capped["message"], capped


def test_classifier_takes_the_decoding_options(imagenet_files, model):
    from ibnedge.classifier import Classifier

    good = imagenet_files[0].read_bytes()
    damaged = _eoi_inside_the_scan(good)
    strict = Classifier(model=model, batch=2, threads=1).predict([damaged, good])
    assert strict[0].error[0] == "corrupt" and strict[1].ok
    lenient = Classifier(model=model, batch=2, threads=1, accept_damaged=True, max_pixels=500 * 375).predict([damaged])
    assert lenient[0].ok
    capped = Classifier(model=model, batch=2, threads=1, max_pixels=500 * 375 - 1).predict([good])
    assert capped[0].error[0] == "too_large"


@pytest.mark.parametrize("device_ids", [[0], [0, 1]], ids=["one device", "two devices"])
def test_predict_iter_streams_and_stops_early(imagenet_files, model, device_ids):
    from ibnedge.classifier import Classifier

    clf = Classifier(model=model, batch=2, threads=1, device_id=device_ids)
    consumed = []

    def endless():
        i = 0
        while True:
            consumed.append(i)
            yield imagenet_files[i % len(imagenet_files)]
            i += 1

    it = clf.predict_iter(endless(), topk=1)
    first = [next(it) for _ in range(5)]
    it.close()  # stops the background thread
    assert all(p.ok for p in first)
    # Bounded read-ahead: a few batches beyond what was consumed, never the whole stream: the
    # 3 batches that hold the 5 results, 2 x devices + 1 in flight, and the one being gathered.
    assert len(consumed) <= (3 + 2 * len(device_ids) + 1 + 1) * 2


def test_bench_json_and_plot(model, tmp_path, imagenet_files):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "--model", model, "--corpus", imagenet_files[0].parent, "--images", "4", "--batch", "1,2",
            "--repeat", "1", "--threads", "1", "--json", out]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", png]
    except ImportError:
        png = None
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    table = proc.stdout.decode()
    assert "ibnedge engine, pil semantics" in table and "end-to-end img/s" in table
    result = json.loads(out.read_text())
    assert result["files"] == 4
    assert set(result["preprocess"]["per_image_1_thread"]) >= {"ibnedge_pil", "ibnedge_mindspore", "ibnedge_fast"}
    rows = result["backends"]
    assert rows and {r["batch"] for r in rows} == {1, 2}
    for r in rows:
        assert r["backend_img_s"] > 0 and r["end_to_end_img_s"] > 0 and r["latency_ms"] > 0
        assert r["e2e_over_backend"] == pytest.approx(r["end_to_end_img_s_runs"][0] / r["backend_img_s_runs"][0])
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_any_usable_model(tmp_path):
    bogus = tmp_path / "m.onnx"
    bogus.write_bytes(b"nope")
    proc = _cli("bench", "--model", bogus, "--images", "2", "--skip-preprocess", "--batch", "1", "--repeat", "1")
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and err[-1].startswith("ibnedge bench: error: no backend could run the model")


@pytest.mark.parametrize("flag", ["--json", "--plot", "--corpus"])
def test_bench_refuses_unusable_paths_before_measuring(tmp_path, flag):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    bogus = tmp_path / "m.onnx"
    bogus.write_bytes(b"nope")  # never loaded: the paths are checked first
    target = tmp_path / "missing" / ("chart.png" if flag == "--plot" else "out.json")
    proc = _cli("bench", "--model", bogus, flag, target, "--images", "2", "--repeat", "1")
    err = proc.stderr.decode().strip().splitlines()
    expected = ("--corpus %s is not a directory" % target if flag == "--corpus"
                else "%s %s: folder %s does not exist" % (flag, target, target.parent))
    assert proc.returncode == 2 and err == ["ibnedge bench: error: " + expected]


def test_bad_weights_under_backend_auto_give_their_reason_once(tmp_path):
    """--backend auto tried each backend on a bad .pth, reading it each time, and listed the
    same reason once per backend ("lite: x.pth: not a PyTorch checkpoint ...; onnx: x.pth:
    not a PyTorch checkpoint ..."; under 3.11 train.export's words for it too). The file is
    read once, and what is wrong with it said once."""
    from pth_writer import random_state_dict, save_pth

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"neither a zip archive nor a pickle")
    unknown = save_pth({"encoder.weight": np.zeros((3, 3), np.float32)}, tmp_path / "unknown.pth")
    state = random_state_dict("resnet_ibn_a_tiny", num_classes=10)
    del state["layer2.0.bn1.IN.weight"]
    misfit = save_pth(state, tmp_path / "misfit.pth")
    cases = [(broken, [], "not a PyTorch checkpoint"),
             (unknown, [], "cannot infer the architecture"),
             (misfit, ["--arch", "resnet_ibn_a_tiny"], "missing layer2.0.bn1.IN.weight")]
    for weights, flags, reason in cases:
        proc = _cli("infer", tmp_path, "--model", weights, *flags, env={"IBNEDGE_HOME": str(tmp_path / "home")})
        err = proc.stderr.decode()
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("ibnedge infer: error: %s" % weights), err
        assert err.count(reason) == 1 and err.count(weights.name) == 1, err
