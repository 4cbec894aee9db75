"""Temporary directories that a SIGKILLed owner leaves behind only until the next one starts.

A context manager's cleanup never runs in a SIGKILLed process, so its temporary directory
would stay for good. Each directory made here holds a lock file that its owner keeps locked
(``fcntl.flock``) while it lives; the kernel drops the lock when the owner dies, however it
dies, so a directory whose lock can be taken has no owner, and the next :func:`owned_temp_dir`
with the same prefix removes it. Pids are not compared: a dead owner's pid may by now be
another process's.

The lock file is locked under a temporary name and then renamed into place, so a directory's
lock file is locked from the moment it can be seen. A directory without one (its owner was
killed between making it and the rename, or it is an older launcher's) cannot be told from
one being made, and is kept.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".owner.lock"


@contextlib.contextmanager
def owned_temp_dir(prefix: str) -> Iterator[Path]:
    """A new directory ``<temp dir>/<prefix>XXXX``, removed on exit; first removes the
    directories of that prefix (this user's) whose owners are gone."""
    if not prefix or os.sep in prefix:
        raise ValueError("prefix must be a non-empty file name, got %r" % (prefix,))
    parent = Path(tempfile.gettempdir())
    remove_unowned(parent, prefix)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))
    try:
        lock_fd = _locked_lock_file(directory)
    except BaseException:  # (Ctrl-C included) a directory without its lock file is never swept
        shutil.rmtree(str(directory), ignore_errors=True)
        raise
    try:
        yield directory
    finally:
        shutil.rmtree(str(directory), ignore_errors=True)  # still locked: no sweep takes it meanwhile
        os.close(lock_fd)


def remove_unowned(parent: Path, prefix: str) -> None:
    """Removes ``parent/<prefix>*`` directories of this user whose lock can be taken."""
    for path in parent.glob(prefix + "*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and _unowned(path):
            shutil.rmtree(str(path), ignore_errors=True)


def _locked_lock_file(directory: Path) -> int:
    pending = directory / (LOCK_NAME + ".pending")
    fd = os.open(str(pending), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # not inherited
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(str(pending), str(directory / LOCK_NAME))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unowned(directory: Path) -> bool:
    try:
        fd = os.open(str(directory / LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file: being made, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its owner lives
    finally:
        os.close(fd)
    return True
