"""Output writers and --resume bookkeeping on real files, torn tails included."""
from __future__ import annotations

import csv
import io
import json
import os

import pytest

from ibnedge.classifier import Prediction, softmax
from ibnedge.files import PathKeys
from ibnedge.results import (
    OutputError,
    Progress,
    TableWriter,
    csv_header,
    load_done,
    open_writer,
    read_rows,
)

import numpy as np


def _keys(paths):
    """What load_done returns for rows with these paths (see test_resume_matches_other_spellings)."""
    keys = PathKeys()
    return {keys(p) for p in paths}


def _preds():
    return [
        Prediction("a/cat.jpg", [281, 282], ["tabby, tabby cat", "tiger cat"], [0.75, 0.125]),
        Prediction("a/bad.jpg", error=("corrupt", "Corrupt JPEG data: premature end of data segment")),
        Prediction('b/we"ird, name.jpg', [1, 0], ["goldfish", "tench"], [0.5, 0.25]),
    ]


def test_jsonl_rows_and_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    with open_writer(out, topk=2) as w:
        for p in _preds():
            w.write(p.to_dict())
    rows = read_rows(out)
    assert [r["path"] for r in rows] == [p.source for p in _preds()]
    assert rows[0]["top"][0] == {"index": 281, "label": "tabby, tabby cat", "prob": 0.75}
    assert rows[1]["error"]["kind"] == "corrupt"
    assert load_done(out) == _keys(p.source for p in _preds())


def test_torn_last_line_is_cut_and_redone(tmp_path):
    out = tmp_path / "r.jsonl"
    with open_writer(out, topk=2) as w:
        for p in _preds()[:2]:
            w.write(p.to_dict())
    whole = out.read_bytes()
    torn = json.dumps(_preds()[2].to_dict()).encode()[:17]  # a kill in the middle of a write
    out.write_bytes(whole + torn)
    assert load_done(out) == _keys(["a/cat.jpg", "a/bad.jpg"])
    assert out.read_bytes() == whole  # the torn tail is gone
    with open_writer(out, topk=2, resume=True) as w:
        w.write(_preds()[2].to_dict())
    assert [r["path"] for r in read_rows(out)] == [p.source for p in _preds()]


def test_torn_file_without_any_newline(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(b'{"path": "x.jp')
    assert load_done(out) == set()
    assert out.read_bytes() == b""


def test_jsonl_foreign_content_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("hello\nworld\n")
    with pytest.raises(OutputError, match="line 1 is not an ibnedge result row"):
        load_done(out)


def test_csv_rows_quoting_and_resume(tmp_path):
    out = tmp_path / "r.csv"
    with open_writer(out, topk=2) as w:
        for p in _preds()[:2]:
            w.write(p.to_dict())
    out.write_bytes(out.read_bytes() + b'"b/we""ird, na')  # torn quoted field
    assert load_done(out, topk=2) == _keys(["a/cat.jpg", "a/bad.jpg"])
    with open_writer(out, topk=2, resume=True) as w:
        w.write(_preds()[2].to_dict())
    with open(str(out), newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == csv_header(2)
    assert [r[0] for r in table[1:]] == [p.source for p in _preds()]
    assert table[1][3:6] == ["tabby, tabby cat", "281", "0.75"]
    assert table[2][1] == "corrupt" and table[2][3:] == [""] * 6
    assert table[3][0] == 'b/we"ird, name.jpg'


def test_csv_with_other_topk_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    with open_writer(out, topk=2) as w:
        w.write(_preds()[0].to_dict())
    with pytest.raises(OutputError, match="not --topk 5"):
        load_done(out, topk=5)


def test_bad_output_names():
    with pytest.raises(OutputError, match=r"use a \.jsonl or \.csv"):
        open_writer("results.txt", topk=5)
    with pytest.raises(OutputError, match="--resume needs --output"):
        open_writer(None, topk=5, resume=True)


def test_missing_output_means_nothing_done(tmp_path):
    assert load_done(tmp_path / "new.jsonl") == set()


def test_table_writer():
    stream = io.StringIO()
    w = TableWriter(stream, path_width=10)
    for p in _preds():
        w.write(p.to_dict())
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("a/cat.jpg") and "tabby, tabby cat 75.0% | tiger cat 12.5%" in lines[0]
    assert "ERROR corrupt: Corrupt JPEG data" in lines[1]


def test_progress_draws_only_when_enabled():
    stream = io.StringIO()
    bar = Progress(stream, enabled=True)
    bar.total = 4
    bar.update(4)
    bar.close()
    assert "4/4 files" in stream.getvalue()
    quiet = io.StringIO()
    bar = Progress(quiet)  # a StringIO is not a terminal
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(1.0) and p[1, 0] == pytest.approx(1 / 3)


def test_resume_matches_other_spellings(tmp_path, monkeypatch):
    """Rows written under one spelling of the inputs (a file from before PathKeys included:
    rows hold plain paths) are found when the rerun names them another way."""
    from ibnedge.files import iter_input_files

    (tmp_path / "imgs" / "nested").mkdir(parents=True)
    for name in ("a.jpg", "nested/b.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"\xff\xd8\xff")
    os.symlink(str(tmp_path / "imgs"), str(tmp_path / "link"))
    monkeypatch.chdir(str(tmp_path))
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "imgs/a.jpg", "top": []}\n{"path": "./imgs//nested/b.jpg", "top": []}\n')
    done = load_done(out)
    for spelling in ("imgs", "./imgs", "imgs/", str(tmp_path / "imgs"), "link", "imgs/nested/.."):
        walked = [i.path for i in iter_input_files([spelling])]
        assert len(walked) == 2 and _keys(walked) == done, spelling
