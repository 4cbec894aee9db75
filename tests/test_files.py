"""Walking user paths: every file once, in a deterministic order, images by content."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from ibnedge.files import count_input_files, is_image_file, iter_input_files


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 60, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.jpg").write_bytes(_jpeg())
    (root / "notes.txt").write_text("shopping list\n")
    (root / "misnamed.jpg").write_bytes(_png())  # content decides, in the engine
    (root / "sub" / "B.PNG").write_bytes(_png())
    (root / "sub" / "deeper" / "no_extension").write_bytes(_jpeg())  # found by sniffing
    (root / "sub" / "empty.dat").write_bytes(b"")
    os.symlink(str(root), str(root / "sub" / "loop"))  # a cycle back to the root
    os.symlink(str(root / "gone.jpg"), str(root / "sub" / "dangling.jpg"))
    os.mkfifo(str(root / "sub" / "pipe"))
    return root


def _rows(items):
    return [(os.path.relpath(i.path, start=str(i.path).split("photos")[0] + "photos"), i.error[0] if i.error else None)
            for i in items]


def test_every_file_once_sorted_with_reasons(tree):
    rows = _rows(iter_input_files([tree]))
    assert rows == [
        ("a.jpg", None),
        ("misnamed.jpg", None),
        ("notes.txt", "not_image"),
        ("sub/B.PNG", None),
        ("sub/dangling.jpg", "unreadable"),
        ("sub/deeper/no_extension", None),
        ("sub/empty.dat", "empty"),
        ("sub/pipe", "unreadable"),
    ]
    assert count_input_files([tree]) == len(rows)


def test_every_message_starts_with_the_path(tree, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(str(tree / "scan.ppm"))
    items = [i for i in iter_input_files([tree, tmp_path / "absent.jpg"]) if i.error is not None]
    kinds = {os.path.basename(i.path): i.error[0] for i in items}
    assert kinds == {"notes.txt": "not_image", "scan.ppm": "unsupported", "dangling.jpg": "unreadable",
                     "empty.dat": "empty", "pipe": "unreadable", "absent.jpg": "unreadable"}
    for item in items:
        assert item.error[1].startswith(item.path + ": "), item


def test_skip_non_images_only_inside_directories(tree):
    rows = _rows(iter_input_files([tree, tree / "notes.txt"], skip_non_images=True))
    assert ("notes.txt", "not_image") in rows  # named explicitly: still reported, once
    assert ("sub/empty.dat", "empty") not in rows
    assert sum(1 for r in rows if r[0] == "notes.txt") == 1


def test_missing_and_duplicate_paths(tree, tmp_path):
    items = list(iter_input_files([tree / "a.jpg", tmp_path / "absent.jpg", tree / "a.jpg", str(tree) + "/./a.jpg"]))
    assert [(os.path.basename(i.path), i.error) for i in items] == [
        ("a.jpg", None),
        ("absent.jpg", ("unreadable", "%s: no such file or directory" % (tmp_path / "absent.jpg"))),
    ]


def test_unlistable_directory_is_a_row(tree):
    locked = tree / "sub" / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes(_jpeg())
    locked.chmod(0)
    try:
        if os.access(str(locked), os.R_OK):
            pytest.skip("running as a user who can read mode-000 directories")
        rows = _rows(iter_input_files([tree]))
        assert ("sub/locked", "unreadable") in rows
    finally:
        locked.chmod(0o755)


def test_walk_is_lazy(tmp_path):
    # Files appearing in a later directory after the walk started are still seen: the walk
    # lists a directory only when it reaches it, it never holds the whole tree.
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
    (tmp_path / "d1" / "x.jpg").write_bytes(_jpeg())
    walk = iter_input_files([tmp_path])
    first = next(walk)
    assert first.path.endswith("d1/x.jpg")
    (tmp_path / "d2" / "y.jpg").write_bytes(_jpeg())
    assert [os.path.basename(i.path) for i in walk] == ["y.jpg"]


def test_is_image_file_by_content(tree):
    assert is_image_file(tree / "sub" / "deeper" / "no_extension") is True
    assert is_image_file(tree / "notes.txt") is False
    assert is_image_file(tree / "nothing-here") is None
