"""Turning the paths a user names into a stream of input files, in bounded memory.

Policy (what ``ibnedge infer`` promises): EVERY file the user names, directly or inside a
named directory (recursively), yields exactly one output row. Image files go to the
engine, which reports per item what is wrong with them (corrupt, truncated, too large,
...). Everything else gets a row saying why it was not classified:

- an empty file: ``empty``; a file whose content is not an image: ``not_image``; an
  image in a format ibnedge does not classify (PPM, JPEG 2000, HEIF, ...): ``unsupported``
  (both decided by sniffing the first bytes, see :mod:`ibnedge.formats`; the
  case-insensitive extension only spares opening files that claim to be images, whose
  content the engine checks anyway, so a PNG named ``.jpg`` or a JPEG without an
  extension is still classified);
- a path that does not exist, a broken symbolic link, a FIFO/socket/device, a directory
  that cannot be listed: ``unreadable``.

Every message starts with the file's path, as the engine's do.

``skip_non_images=True`` (``--skip-non-images``) drops non-image files found while
walking directories instead of reporting them (images in unsupported formats are still
reported); files named explicitly still get a row.

Directories are walked depth first, entries sorted by name within each directory, so
the order is deterministic; memory holds one sorted listing per directory level of the
current path (plus a set of visited directories to break symlink cycles), never the
whole tree. The same file reached twice (named twice, under two spellings, or named and
found inside a named directory) is yielded once, under the first spelling: files are told
apart by :class:`PathKeys`, which ``--resume`` uses too. Rows keep the path as the user
spelled it (``imgs/a.jpg`` for ``imgs``, ``./imgs/a.jpg`` for ``./imgs``).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from .formats import CLASSIFIED_SUFFIXES, HEAD_BYTES, refusal, sniff  # pure Python, no native code

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class InputFile:
    """One file to report on. ``error`` is None when the engine should decode it, else
    (kind, message) decided without decoding (kinds as in the engine's ItemError)."""

    path: str
    error: Optional[Tuple[str, str]] = None


class PathKeys(object):
    """Calling it maps an input path to the key that identifies its file, in the walk and for ``--resume``.

    The key is the real absolute path of the file's directory joined with the file's own
    name, so every spelling of one file gets one key: relative or absolute, ``./``, doubled
    or trailing separators, ``..``, and directories reached through symbolic links. The
    name itself is not resolved: a symbolic link to a file is an entry of its own and gets
    a row of its own, as the walk reports it (it tells directories apart by device and
    inode, entries by name). Relative paths resolve against the current directory, as
    the walk's do; each directory is resolved once per instance.
    """

    def __init__(self) -> None:
        self._real_dirs = {}  # type: Dict[str, str]

    def __call__(self, path: PathLike) -> str:
        path = os.fspath(path)
        head, name = os.path.split(path)
        if name in ("", os.curdir, os.pardir):  # a directory named as such, e.g. "imgs/" or ".."
            return os.path.realpath(path)
        real = self._real_dirs.get(head)
        if real is None:
            real = self._real_dirs[head] = os.path.realpath(head or os.curdir)
        return os.path.join(real, name)


def is_image_file(path: PathLike) -> Optional[bool]:
    """True/False by content (ibnedge.formats.sniff), None when the file cannot be read."""
    head = _read_head(str(path))
    return None if head is None else sniff(head) is not None


def _read_head(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return None


def _refused(path: str, kind: str, reason: str) -> InputFile:
    """A row for ``path`` that never reaches the engine; the message names the file first."""
    return InputFile(path, (kind, "%s: %s" % (path, reason)))


def iter_input_files(paths: Iterable[PathLike], skip_non_images: bool = False) -> Iterator[InputFile]:
    """Every input file under ``paths`` (files and directories), once each, in order."""
    seen = set()  # type: Set[str]
    keys = PathKeys()
    for raw in paths:
        path = os.fspath(raw)
        for item in _iter_one(path, skip_non_images):
            key = keys(item.path)
            if key in seen:
                continue
            seen.add(key)
            yield item


def count_input_files(paths: Iterable[PathLike], skip_non_images: bool = False) -> int:
    """How many rows :func:`iter_input_files` will yield (for a progress bar's ETA)."""
    return sum(1 for _ in iter_input_files(paths, skip_non_images))


def _iter_one(path: str, skip_non_images: bool) -> Iterator[InputFile]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        kind = "broken symbolic link" if os.path.islink(path) else "no such file or directory"
        yield _refused(path, "unreadable", kind)
        return
    except OSError as exc:
        yield _refused(path, "unreadable", exc.strerror or str(exc))
        return
    if stat.S_ISDIR(st.st_mode):
        for item in _walk(path, skip_non_images):
            yield item
    else:
        item = _classify(path, st, explicit=True, skip_non_images=skip_non_images)
        if item is not None:
            yield item


def _classify(path: str, st: os.stat_result, explicit: bool, skip_non_images: bool) -> Optional[InputFile]:
    if not stat.S_ISREG(st.st_mode):
        # Reading a FIFO would block and a device is never a photo: report, do not open.
        return _refused(path, "unreadable", "not a regular file")
    if os.path.splitext(path)[1].lower() in CLASSIFIED_SUFFIXES:
        return InputFile(path)  # the engine checks the content (and reports empty files)
    if st.st_size == 0:
        return None if skip_non_images and not explicit else _refused(path, "empty", "empty file (0 bytes)")
    head = _read_head(path)
    if head is None:
        return _refused(path, "unreadable", "cannot open the file")
    verdict = refusal(head)
    if verdict is None:
        return InputFile(path)
    if verdict[0] == "not_image" and skip_non_images and not explicit:
        return None
    return _refused(path, verdict[0], verdict[1])


def _walk(root: str, skip_non_images: bool) -> Iterator[InputFile]:
    visited = set()  # type: Set[Tuple[int, int]]
    # A stack of (directory, sorted entry names, next index): one listing per level.
    stack = []  # type: List[Tuple[str, List[str], List[int]]]

    def enter(directory: str) -> Optional[InputFile]:
        try:
            st = os.stat(directory)
            ident = (st.st_dev, st.st_ino)
            if ident in visited:
                return None  # a symlink cycle or a second link to a walked directory
            visited.add(ident)
            names = sorted(os.listdir(directory))
        except OSError as exc:
            return _refused(directory, "unreadable", "cannot list the directory: %s" % (exc.strerror or exc))
        stack.append((directory, names, [0]))
        return None

    failed = enter(root)
    if failed is not None:
        yield failed
    while stack:
        directory, names, cursor = stack[-1]
        if cursor[0] >= len(names):
            stack.pop()
            continue
        name = names[cursor[0]]
        cursor[0] += 1
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            reason = "broken symbolic link" if os.path.islink(path) else (exc.strerror or str(exc))
            yield _refused(path, "unreadable", reason)
            continue
        if stat.S_ISDIR(st.st_mode):
            failed = enter(path)
            if failed is not None:
                yield failed
            continue
        item = _classify(path, st, explicit=False, skip_non_images=skip_non_images)
        if item is not None:
            yield item
