"""Files replaced whole: written under a temporary name beside them, then renamed into place.

A reader sees the old file or the new one, never part of one, and whoever still holds the
old file (open, or hard-linked) keeps its bytes; a kill during the write leaves the old
file whole. Standard library only: the launcher side of ``train`` uses it too.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: ``<name>.partial``, not a ``*.ckpt`` or
    ``*.json`` name, so that nothing looking for checkpoints or records takes it for one."""
    return path.with_name(path.name + ".partial")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = partial_path(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def copy_atomic(source: Path, path: Path) -> None:
    tmp = partial_path(path)
    shutil.copyfile(str(source), str(tmp))
    tmp.replace(path)
