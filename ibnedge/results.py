"""Where predictions go: a readable table on stdout, or a ``.jsonl`` / ``.csv`` file.

Every row is written and flushed as soon as it is known, so a killed run leaves every
finished row on disk and at most one torn last line. ``--resume`` reads the file back,
cuts a torn tail, and returns the files already done, as :class:`ibnedge.files.PathKeys`
keys: the rerun may name the inputs differently (``./imgs`` for ``imgs``, an absolute
path, a symbolic link to the folder) and still appends only the others, so the file ends
with exactly one row per input. Rows keep the paths as the run that wrote them spelled them.

Row schema (one per input file, see ``Prediction.to_dict``)::

    {"path": "a/b.jpg", "top": [{"index": 281, "label": "tabby, tabby cat", "prob": 0.61}, ...]}
    {"path": "a/c.jpg", "error": {"kind": "corrupt", "message": "..."}}

CSV columns: ``path,error_kind,error_message,label_1,index_1,prob_1,...,label_K,index_K,prob_K``.

File names are bytes on POSIX; Python holds the bytes that are not UTF-8 as lone
surrogates (``surrogateescape``), which UTF-8 text cannot carry. Such a row is still
written and resumed: JSONL escapes it (``"caf\udce9.jpg"``, read back as the same name),
CSV holds the name's own bytes, and the table shows them backslash-escaped.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Set, Union

from .errors import UserError
from .files import PathKeys

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = (".jsonl", ".csv")


class OutputError(UserError, ValueError):
    """The output file cannot be used (unknown suffix, unreadable, another run's layout)."""


def output_format(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OutputError("--output %s: use a .jsonl or .csv file name" % path)
    return suffix[1:]


class ResultWriter(object):
    """Base writer: ``write(row)`` for each row dict, ``close()`` at the end."""

    def write(self, row: Dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TableWriter(ResultWriter):
    """Human-readable lines: ``path  label 61.2% | label 20.1% | ...``."""

    def __init__(self, stream: Optional[IO[str]] = None, path_width: int = 32) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._width = path_width

    def write(self, row: Dict[str, Any]) -> None:
        path = row["path"]
        self._width = max(self._width, min(len(path), 72))
        if "error" in row:
            text = "ERROR %s: %s" % (row["error"]["kind"], row["error"]["message"])
        else:
            text = " | ".join("%s %.1f%%" % (t["label"], 100.0 * t["prob"]) for t in row["top"])
        line = "%-*s  %s\n" % (self._width, path, text)
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        if not _encodable(line, encoding, getattr(self._stream, "errors", None) or "strict"):
            line = line.encode(encoding, "backslashreplace").decode(encoding)
        self._stream.write(line)
        self._stream.flush()


def _encodable(text: str, encoding: str = "utf-8", errors: str = "strict") -> bool:
    try:
        text.encode(encoding, errors)
    except UnicodeEncodeError:
        return False
    return True


class _FileWriter(ResultWriter):
    """One flushed write() per row (a kill cannot interleave half rows); a failing write
    (disk full, quota) is an OutputError naming the file."""

    def __init__(self, path: PathLike, append: bool, newline: str, errors: str = "strict") -> None:
        self._path = path
        self._file = open(str(path), "a" if append else "w", encoding="utf-8", errors=errors, newline=newline)

    def _write_line(self, line: str) -> None:
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            raise OutputError("cannot write to %s (%s)" % (self._path, exc.strerror or exc))

    def close(self) -> None:
        self._file.close()


class JsonlWriter(_FileWriter):
    def __init__(self, path: PathLike, append: bool) -> None:
        super(JsonlWriter, self).__init__(path, append, newline="\n")

    def write(self, row: Dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False)
        if not _encodable(line):  # a non-UTF-8 file name: ASCII escapes carry it exactly
            line = json.dumps(row)
        self._write_line(line + "\n")


class CsvWriter(_FileWriter):
    def __init__(self, path: PathLike, topk: int, append: bool) -> None:
        super(CsvWriter, self).__init__(path, append, newline="", errors="surrogateescape")
        self._topk = topk
        if not append or self._file.tell() == 0:
            self._emit(csv_header(topk))

    def _emit(self, fields: List[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(fields)
        self._write_line(buf.getvalue())

    def write(self, row: Dict[str, Any]) -> None:
        fields = [row["path"]]  # type: List[Any]
        if "error" in row:
            fields += [row["error"]["kind"], row["error"]["message"]] + [""] * (3 * self._topk)
        else:
            fields += ["", ""]
            top = row["top"]
            for i in range(self._topk):
                fields += [top[i]["label"], top[i]["index"], top[i]["prob"]] if i < len(top) else ["", "", ""]
        self._emit(fields)


def csv_header(topk: int) -> List[str]:
    cols = ["path", "error_kind", "error_message"]
    for i in range(1, topk + 1):
        cols += ["label_%d" % i, "index_%d" % i, "prob_%d" % i]
    return cols


def open_writer(
    output: Optional[PathLike], topk: int, resume: bool = False, stream: Optional[IO[str]] = None
) -> ResultWriter:
    """A writer for ``output`` (None: a table on ``stream``/stdout); ``resume`` appends."""
    if output is None:
        if resume:
            raise OutputError("--resume needs --output FILE (.jsonl or .csv) to know what is done")
        return TableWriter(stream)
    fmt = output_format(output)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        return JsonlWriter(output, append=resume)
    return CsvWriter(output, topk, append=resume)


def load_done(output: PathLike, topk: Optional[int] = None) -> Set[str]:
    """The files already in ``output`` (for ``--resume``) as :class:`PathKeys` keys, after
    cutting a torn last line.

    A missing file means nothing is done. A CSV written with another ``--topk`` is refused
    (its columns would not line up), and so is a file that is not ours.
    """
    path = Path(output)
    fmt = output_format(path)
    if not path.exists():
        return set()
    _cut_torn_tail(path)
    keys = PathKeys()
    try:
        return {keys(p) for p in _row_paths(path, fmt, topk)}
    except csv.Error as exc:
        raise OutputError("%s is not an ibnedge result file (%s): resume into a new --output file" % (path, exc))


def _row_paths(path: Path, fmt: str, topk: Optional[int]) -> Iterator[str]:
    """The path of every row of the ``fmt`` (:func:`output_format`) result file ``path``."""
    with open(str(path), encoding="utf-8", errors="surrogateescape", newline="") as f:
        if fmt == "jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield str(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    raise OutputError(
                        "%s line %d is not an ibnedge result row: resume into a new --output file" % (path, lineno)
                    )
            return
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        if header[:3] != ["path", "error_kind", "error_message"]:
            raise OutputError("%s is not an ibnedge CSV result file: resume into a new --output file" % path)
        if topk is not None and header != csv_header(topk):
            raise OutputError(
                "%s has %d result columns, not --topk %d: rerun with the same --topk or a new --output"
                % (path, (len(header) - 3) // 3, topk)
            )
        for fields in reader:
            if fields:
                yield fields[0]


def read_rows(output: PathLike) -> List[Dict[str, Any]]:
    """All rows of a ``.jsonl`` result file (for tests and scripts)."""
    with open(str(output), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline: the row a kill interrupted. It is redone."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(str(path), "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back in blocks for the last newline; the torn line is at most one row long.
        pos = size
        keep = 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = pos + nl + 1
                break
        f.truncate(keep)


class Progress(object):
    """A one-line progress report on stderr (files, files/s, ETA), only on a terminal."""

    def __init__(self, stream: Optional[IO[str]] = None, enabled: Optional[bool] = None, unit: str = "files") -> None:
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.unit = unit
        self.total = None  # type: Optional[int]
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= 0.2:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = max(self.total - self.done, 0)
            eta = _clock(left / rate) if rate > 0 else "?"
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            text = "[%s] %d/%d %s  %.1f/s  ETA %s" % (bar, self.done, self.total, self.unit, rate, eta)
        else:
            text = "%d %s  %.1f/s" % (self.done, self.unit, rate)
        self._stream.write("\r" + text + "\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)
