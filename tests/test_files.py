"""Walking user paths: every file once, in a deterministic order, images by content."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path

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


# Who walks the tree when the test runs as root (CI does), which reads mode-000 directories.
UNPRIVILEGED_UID = 65534  # "nobody"


def test_unlistable_directory_is_a_row():
    # Under /tmp, not tmp_path: pytest's base directory is mode 0700, closed to the other uid.
    base = Path(tempfile.mkdtemp(prefix="ibnedge-files-"))
    locked = base / "photos" / "sub" / "locked"
    try:
        locked.mkdir(parents=True)
        (base / "photos" / "a.jpg").write_bytes(_jpeg())
        (locked / "x.jpg").write_bytes(_jpeg())
        for d in (base, base / "photos", base / "photos" / "sub"):
            d.chmod(0o755)
        locked.chmod(0)
        rows = _walk_as_unprivileged(base / "photos") if os.geteuid() == 0 else _walk_if_unreadable(base / "photos")
        assert rows == [["a.jpg", None], ["sub/locked", "unreadable"]]
    finally:
        locked.chmod(0o755)
        shutil.rmtree(str(base))


def _walk_if_unreadable(root: Path):
    if os.access(str(root / "sub" / "locked"), os.R_OK):
        pytest.skip("running as a user who can read mode-000 directories")
    return [list(r) for r in _rows(iter_input_files([root]))]


def _walk_as_unprivileged(root: Path):
    """The walk's rows, from a forked child that gave up root for UNPRIVILEGED_UID. Forked,
    not exec'd: the other uid need not be able to read the interpreter or the checkout."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                os.setgroups([])
                os.setgid(UNPRIVILEGED_UID)
                os.setuid(UNPRIVILEGED_UID)
            except PermissionError as exc:
                reply = {"skip": "cannot drop root for uid %d: %s" % (UNPRIVILEGED_UID, exc)}
            else:
                if os.access(str(root / "sub" / "locked"), os.R_OK):
                    reply = {"skip": "uid %d can read mode-000 directories" % UNPRIVILEGED_UID}
                else:
                    reply = {"rows": _rows(iter_input_files([root]))}
        except BaseException:
            reply = {"error": traceback.format_exc()}
        finally:
            os.write(write_fd, json.dumps(reply).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        reply = json.loads(f.read().decode())
    os.waitpid(pid, 0)
    if "skip" in reply:
        pytest.skip(reply["skip"])
    assert "error" not in reply, reply["error"]
    return reply["rows"]


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


def test_one_file_under_every_spelling_has_one_key(tmp_path, monkeypatch):
    """PathKeys: the identity the walk de-duplicates by and --resume compares."""
    from ibnedge.files import PathKeys

    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(_jpeg())
    os.symlink(str(tmp_path / "imgs"), str(tmp_path / "link"))
    os.symlink("a.jpg", str(tmp_path / "imgs" / "alias.jpg"))  # a file link: an entry of its own
    monkeypatch.chdir(str(tmp_path))
    keys = PathKeys()
    spellings = ["imgs/a.jpg", "./imgs/a.jpg", "imgs//a.jpg", str(tmp_path / "imgs" / "a.jpg"),
                 "other/../imgs/a.jpg", "imgs/sub/../a.jpg", "link/a.jpg", "./link//a.jpg"]
    assert {keys(p) for p in spellings} == {str(tmp_path.resolve() / "imgs" / "a.jpg")}
    assert keys("imgs/alias.jpg") != keys("imgs/a.jpg")
    assert keys("imgs/") == keys("./imgs") == keys("imgs") == str(tmp_path.resolve() / "imgs")


def test_a_folder_named_twice_under_two_spellings_is_walked_once(tree, tmp_path, monkeypatch):
    os.symlink(str(tree), str(tmp_path / "photos_link"))
    monkeypatch.chdir(str(tmp_path))
    once = [i.path for i in iter_input_files(["photos"])]
    twice = [i.path for i in iter_input_files(["photos", "./photos/", str(tree), "photos_link", "photos/sub/.."])]
    assert twice == once and once[0].startswith("photos/")  # the first spelling, as the user gave it
